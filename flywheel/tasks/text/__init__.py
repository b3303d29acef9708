"""The text-classification task, one module per facet; ``spec`` assembles and registers it."""

from flywheel.tasks.text.spec import TextClassification

__all__ = ["TextClassification"]
