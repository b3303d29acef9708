"""The ``toy-regression`` task assembled from its facets, registered on import."""

from __future__ import annotations

from flywheel.tasks.registry import register
from tests.toy_task.data import ToyData
from tests.toy_task.model import ToyModel
from tests.toy_task.policy import ToyPolicy
from tests.toy_task.review import ToyReview
from tests.toy_task.serving import ToyServing


@register
class ToyRegression(ToyData, ToyModel, ToyServing, ToyReview, ToyPolicy):
    """A tiny tabular regressor judged by mean absolute error."""

    name = "toy-regression"

    @classmethod
    def from_settings(cls, settings) -> ToyRegression:
        return cls()

    def serving_meta(self, record) -> dict:
        return {}

    @classmethod
    def from_serving_meta(cls, meta: dict) -> ToyRegression:
        return cls()
