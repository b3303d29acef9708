"""What every facet of the toy task reads."""

from __future__ import annotations

from flywheel.tasks.base import TaskSpec

FEATURES = 4  # inputs per sample


class ToyFields(TaskSpec):
    """The toy task's state: the number of inputs."""

    features: int = FEATURES
