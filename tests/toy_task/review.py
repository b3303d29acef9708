"""The toy task's review: nothing beyond the report (the defaults)."""

from __future__ import annotations

from tests.toy_task.fields import ToyFields


class ToyReview(ToyFields):
    baseline_caption = "baseline: the training mean"
