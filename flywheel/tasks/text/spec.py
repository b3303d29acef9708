"""The ``text-classification`` task: a sentence encoder (all-MiniLM-L6-v2 by default) with LoRA
on its attention and a linear head initialised from a linear probe (the baseline).

Samples are ``text`` + ``label``; the metrics are accuracy, macro-F1, per-class accuracy and
the confusion matrix; serving returns ``label`` and ``confidence``; the review note gets a
confusion-matrix PNG and the misclassified golden examples.
"""

from __future__ import annotations

from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.tasks.registry import register
from flywheel.tasks.text.data import TextData
from flywheel.tasks.text.model import TextModel, default_base_model
from flywheel.tasks.text.policy import TextPolicy
from flywheel.tasks.text.review import TextReview
from flywheel.tasks.text.serving import TextServing


@register
class TextClassification(TextData, TextModel, TextServing, TextReview, TextPolicy):
    """Sequence classification on a sentence encoder (all-MiniLM-L6-v2 by default).

    The model is ``flywheel.tasks.text.network.SentenceClassifier`` (pooled as the checkpoint was
    trained, head initialised from the linear probe); the baseline is that probe.
    """

    name = "text-classification"

    @classmethod
    def from_settings(cls, settings) -> TextClassification:
        return cls(base_model=settings.training.base_model, max_length=settings.training.max_length)

    def __init__(self, base_model: str | Path | None = None, max_length: int = 64, config=None):
        """``config`` (a transformers BertConfig) builds a randomly initialised model instead (tests)."""
        self.base_model = Path(base_model) if base_model else default_base_model()
        self.max_length = max_length
        self.config = config
        self._tokenizer = None

    def serving_meta(self, record) -> dict:
        """``base_model`` None for the encoder of the installed package (its path differs per
        machine), else the configured checkpoint's path."""
        base = str(self.base_model)
        default = Path(base).resolve() == default_base_model().resolve()
        return {"max_length": record.max_length or self.max_length, "base_model": None if default else base}

    @classmethod
    def from_serving_meta(cls, meta: dict) -> TextClassification:
        """The spec a version was trained with; its checkpoint must exist on this machine."""
        base = meta.get("base_model")
        if base and not Path(base).is_dir():
            raise FlywheelError(
                f"this version was trained on the base model {base}, which is not on this machine; "
                "install it at that path (training.base_model) before loading the version"
            )
        return cls(base_model=base, max_length=meta.get("max_length") or 64)
