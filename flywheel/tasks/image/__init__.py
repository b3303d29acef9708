"""The image-restoration task, one module per facet; ``spec`` assembles and registers it."""

from flywheel.tasks.image.spec import ImageRestoration

__all__ = ["ImageRestoration"]
