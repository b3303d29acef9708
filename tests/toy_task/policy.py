"""The toy task's policy: MAE, lower is better; not worse than the mean predictor at first."""

from __future__ import annotations

from flywheel.settings import Guard
from tests.toy_task.fields import ToyFields


class ToyPolicy(ToyFields):
    primary_metric = "mae"
    primary_direction = "min"
    live_metric = "mae"
    live_direction = "min"  # an error: the monitor rolls back when it rises
    live_tolerance = 0.05  # the live MAE rise allowed (found missing by the protocol check)
    shown_metrics = ("mae",)
    default_min_new_samples = 60

    @classmethod
    def default_guards(cls) -> list:
        return [Guard(metric="mae", holdout="golden", direction="min", tolerance=0.05, detect=0.2)]

    @classmethod
    def default_floors(cls) -> dict[str, float]:
        return {}

    @classmethod
    def baseline_guard(cls, rules, metric: str):
        return Guard(metric=metric, holdout=rules.holdout, direction="min", tolerance=0.0, detect=0.1)

    @classmethod
    def default_baseline_gain(cls) -> float | None:
        return None

    @classmethod
    def default_ratchet_budget(cls) -> float | None:
        return 0.1
