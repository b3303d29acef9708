"""What every facet of the text task reads: the spec's configuration (set by
``TextClassification.__init__``), the tokenizer and the trimming of padded batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel.tasks.base import TaskSpec


class TextFields(TaskSpec):
    """The text task's state, shared by its facets."""

    base_model: Path
    max_length: int
    config: Any  # a transformers BertConfig for a randomly initialised model (tests), else None
    _tokenizer: Any

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.base_model))
        return self._tokenizer

    @staticmethod
    def _trimmed(batch: dict):
        """(input_ids, attention_mask) cut to the longest text: texts are right-padded to max_length."""
        length = max(1, int(batch["attention_mask"].sum(1).max()))
        return batch["input_ids"][:, :length], batch["attention_mask"][:, :length]
