"""The toy task's samples: ``x`` (a list of floats, stored in Feast as JSON) and ``y`` (a float)."""

from __future__ import annotations

import json
import math
from typing import Any

from flywheel.tasks.base import Suite, read_table, shown
from tests.toy_task.fields import ToyFields


class ToyDataset:
    """Tensors of a frame's samples: ``x`` [features] and ``y`` [1]."""

    def __init__(self, frame, features: int):
        import torch

        xs = [json.loads(v) for v in frame["toy_x"]]
        self.x = torch.tensor(xs, dtype=torch.float32).reshape(len(xs), features)
        self.y = torch.tensor(frame["toy_y"].astype(float).tolist(), dtype=torch.float32).reshape(-1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class ToyData(ToyFields):
    sample_columns = ["toy_x", "toy_y"]
    feast_fields = {"toy_x": "String", "toy_y": "Float64"}

    @classmethod
    def feast_columns(cls, record, images) -> dict[str, Any]:
        return {}  # the feedback contract carries text and images: toy rows go to Feast directly

    def load_samples(self, path):
        frame = read_table(path, "x (a list of numbers) and y (a number)")
        frame["toy_x"] = [json.dumps([float(v) for v in x]) for x in frame["x"]]
        frame["toy_y"] = frame["y"].astype(float)
        return frame[["sample_id", "toy_x", "toy_y"]]

    def is_sample(self, frame):
        return frame["toy_y"].notna() & frame["toy_x"].notna()

    def class_counts(self, frame, labels: list[str]) -> dict[str, int]:
        return {}

    def labels_of(self, frame) -> list[str]:
        return []

    def quarantine_reasons(self, frame, labels: list[str], gate, mark) -> None:
        def bad_x(value) -> bool:
            try:
                xs = json.loads(value)
            except (TypeError, ValueError):
                return True
            return len(xs) != self.features or not all(math.isfinite(float(v)) for v in xs)

        mark(frame["toy_x"].map(bad_x), f"x is not {self.features} finite numbers")
        mark(~frame["toy_y"].map(lambda v: math.isfinite(float(v))), "y is not a finite number")

    def shown_example(self, row) -> dict[str, Any]:
        return {"x": shown(row["toy_x"], 60), "y": shown(row["toy_y"], 20)}

    def expectations(self, frame, labels: list[str], gate) -> list[Suite]:
        import great_expectations as gx

        return [Suite(frame, [gx.expectations.ExpectColumnValuesToNotBeNull(column="toy_y")])]

    def dataset(self, frame, labels: list[str]) -> ToyDataset:
        return ToyDataset(frame, self.features)
