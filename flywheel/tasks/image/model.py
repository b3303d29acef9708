"""The image-restoration task's learner: building and saving the model, the baseline, forward pass,
losses and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flywheel.tasks.image.fields import ImageFields
from flywheel.tasks.image.network import (  # a cheap import: no torch
    LORA_TARGETS,
    MODULES_TO_SAVE,
    RestorationNetConfig,
    build_denoiser,
    charbonnier,
    psnr,
    ssim,
)

NET_FILE = "adapter_net.json"  # "adapter_*": copied with the adapter into MLflow


def _net_config(overrides: dict | None = None):
    return RestorationNetConfig.from_dict({**RestorationNetConfig().to_dict(), **(overrides or {})})


def degraded_input():
    """The baseline: the degraded input returned as it is (what you get without a model)."""
    import torch

    return torch.nn.Identity()


class ImageModel(ImageFields):
    """The model facet of the image task's spec."""

    lora_targets = list(LORA_TARGETS)
    modules_to_save = list(MODULES_TO_SAVE)
    cache_teacher = False
    cpu_threads = 1  # see flywheel.tasks.base.cpu_threads: one thread is faster for this network

    def build(self, labels: list[str], version_dir: Path | None = None):
        cfg = self.net
        if version_dir is not None and (Path(version_dir) / NET_FILE).is_file():
            cfg = RestorationNetConfig.from_dict(json.loads((Path(version_dir) / NET_FILE).read_text()))
        return build_denoiser(cfg)

    def save_architecture(self, model, folder: Path) -> None:
        (Path(folder) / NET_FILE).write_text(json.dumps(self.net.to_dict(), indent=2) + "\n")

    def fit_baseline(self, data, labels: list[str], seed: int = 0):
        return degraded_input()

    def load_baseline(self, labels: list[str], folder: Path):
        return degraded_input()

    def forward(self, model, batch: dict):
        return model(batch["pixel_values"])

    def task_loss(self, outputs, batch: dict):
        return charbonnier(outputs.float(), batch["target"].float())

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        """L2 to the frozen champion's output (``temperature`` has no meaning here)."""
        import torch.nn.functional as F

        return F.mse_loss(outputs.float(), teacher_outputs.float())

    def evidence(self, outputs, batch: dict) -> dict[str, list]:
        target = batch["target"].float()
        out = outputs.float().clamp(0, 1)
        return {"psnr": psnr(out, target).tolist(), "ssim": ssim(out, target).tolist()}

    def per_sample(self, evidence: dict[str, list]) -> dict[str, list[float]]:
        return {"psnr": list(evidence["psnr"]), "ssim": list(evidence["ssim"])}

    def metrics(self, evidence: dict[str, list], labels: list[str]) -> dict[str, Any]:
        n = len(evidence.get("psnr", []))
        return {k: (sum(evidence[k]) / n if n else float("nan")) for k in ("psnr", "ssim")}
