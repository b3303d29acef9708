"""The toy task's serving: an ``x`` column (lists of numbers) → a ``y`` column."""

from __future__ import annotations

import json
from typing import Any

from flywheel.tasks.base import predict
from tests.toy_task.fields import ToyFields


class ToyServing(ToyFields):
    serving_input = "x"
    serving_output = "y"

    def serve(self, model, model_input, labels: list[str]):
        import pandas as pd

        frame = pd.DataFrame({"toy_x": [json.dumps(list(x)) for x in model_input["x"]], "toy_y": 0.0})
        out = predict(self, model, self.dataset(frame, labels))
        return pd.DataFrame({"y": out.reshape(-1).tolist()})

    def serving_example(self, golden):
        import pandas as pd

        return pd.DataFrame({"x": [json.loads(v) for v in golden["toy_x"].head(4)]})

    @classmethod
    def serving_smoke(cls):
        import pandas as pd

        return pd.DataFrame({"x": [[0.0] * cls.features]})

    @classmethod
    def answer(cls, row: dict[str, Any]) -> dict[str, Any]:
        return {"y": float(row["y"])}

    @classmethod
    def live_value(cls, record) -> float | None:
        return None  # no live traffic: the feedback contract has no tabular input
