"""The text-classification task's policy: the primary metric, the promotion gate's default guards, floors,
baseline and ratchet."""

from __future__ import annotations

from flywheel.settings import Guard
from flywheel.tasks.text.fields import TextFields


class TextPolicy(TextFields):
    """The policy facet of the text task's spec."""

    primary_metric = "accuracy"
    live_metric = "accuracy"
    live_tolerance = 0.02  # two accuracy points on live traffic
    shown_metrics = ("accuracy", "macro_f1")

    @classmethod
    def default_ratchet_budget(cls) -> float | None:
        return 0.01  # one accuracy point below the best promoted version's, in all

    @classmethod
    def default_guards(cls) -> list:
        return [
            Guard(metric="accuracy", holdout="golden", tolerance=0.005, detect=0.05),
            Guard(metric="accuracy", holdout="old", tolerance=0.01, detect=0.06),
        ]

    @classmethod
    def default_floors(cls) -> dict[str, float]:
        return {"golden.accuracy": 0.5}
