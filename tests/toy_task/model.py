"""The toy task's learner: a two-layer MLP (LoRA on both layers), MSE loss, MAE metric; the
baseline predicts the training mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.toy_task.fields import ToyFields

BASELINE = "baseline.json"


def _mlp(features: int):
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(features, 16)
            self.fc2 = nn.Linear(16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.tanh(self.fc1(x)))

    return MLP()


def _constant(value: float):
    import torch
    from torch import nn

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("value", torch.tensor([value]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.value.expand(len(x), 1)

    return Constant()


class ToyModel(ToyFields):
    lora_targets = ["fc1", "fc2"]
    modules_to_save: list[str] = []

    def build(self, labels: list[str], version_dir: Path | None = None):
        return _mlp(self.features)

    def save_architecture(self, model, folder: Path) -> None:
        return None  # the architecture is fixed

    def fit_baseline(self, data, labels: list[str], seed: int = 0):
        return _constant(float(data.y.mean()))

    def init_from_baseline(self, model, baseline) -> None:
        return None

    def save_baseline(self, baseline, folder: Path) -> None:
        (Path(folder) / BASELINE).write_text(json.dumps({"mean": float(baseline.value)}))

    def load_baseline(self, labels: list[str], folder: Path):
        return _constant(json.loads((Path(folder) / BASELINE).read_text())["mean"])

    def forward(self, model, batch: dict):
        return model(batch["x"])

    def task_loss(self, outputs, batch: dict):
        import torch.nn.functional as F

        return F.mse_loss(outputs.float(), batch["y"].float())

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        import torch.nn.functional as F

        return F.mse_loss(outputs.float(), teacher_outputs.float())

    def evidence(self, outputs, batch: dict) -> dict[str, list]:
        return {"mae": (outputs.float() - batch["y"].float()).abs().reshape(-1).tolist()}

    def per_sample(self, evidence: dict[str, list]) -> dict[str, list[float]]:
        return {"mae": list(evidence["mae"])}

    def metrics(self, evidence: dict[str, list], labels: list[str]) -> dict[str, Any]:
        errors = evidence.get("mae", [])
        return {"mae": sum(errors) / len(errors) if errors else float("nan")}
