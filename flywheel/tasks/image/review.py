"""The image-restoration task's review: the review note's artifacts, the label screen, the review
queue's view and answers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from flywheel.events import feedback_event
from flywheel.images import (
    ImageError,
    decode_png,
    decode_png_b64,
)
from flywheel.lazy import lazy_import
from flywheel.tasks.base import predict
from flywheel.tasks.image.fields import ImageFields
from flywheel.tasks.image.network import (  # a cheap import: no torch
    psnr,
    to_tensor,
    to_uint8,
)
from flywheel.tasks.label_checks import LabelFlags, sharpness
from flywheel.tasks.label_checks import check_pair as check_target

np = lazy_import("numpy")

_matplotlib = lazy_import("matplotlib")
plt = lazy_import("matplotlib.pyplot")

GRID_SAMPLES = 4


# The target screen (screen_labels), calibrated on the golden pairs (bench/bench_label_screen.py):
SCREEN_GOLDEN_PAIRS = 32  # golden pairs the distance threshold is measured on (a forward pass each)


SCREEN_ALIGN_GAIN_DB = 1.0  # a shift counts when aligning gains more than this


SCREEN_SHARPNESS_MARGIN = (
    0.5  # blurred: 10^0.5 times less fine detail than the golden targets' 1st percentile
)


SCREEN_PSNR_MARGIN_DB = 6.0  # far: this much under the golden pairs' 5th percentile


def grid_png(data, roles: dict, path: Path) -> Path:
    """One row per sample of ``data`` (an ImageDataset), each image titled with its PSNR to the
    target; ``roles``: champion and candidate models (a missing one is left out)."""
    _matplotlib.use("Agg")  # before pyplot loads (plt is lazy)
    import torch

    items = [data[i] for i in range(len(data))]
    inputs = torch.stack([it["pixel_values"] for it in items])
    targets = torch.stack([it["target"] for it in items])
    columns = [("degraded", inputs)]
    with torch.inference_mode():
        for role in ("champion", "candidate"):
            if roles.get(role) is not None:
                model = roles[role].eval().to("cpu")
                columns.append((role, model(inputs).float().clamp(0, 1)))
    columns.append(("target", targets))
    fig, axes = plt.subplots(len(items), len(columns), figsize=(2.2 * len(columns), 2.3 * len(items)))
    axes = axes.reshape(len(items), len(columns))
    for i in range(len(items)):
        for j, (name, images) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(to_uint8(images[i]))
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "target":
                name = f"{name} {float(psnr(images[i : i + 1], targets[i : i + 1])[0]):.1f} dB"
            ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class ImageReview(ImageFields):
    """The review facet of the image task's spec."""

    baseline_caption = "baseline: the degraded input itself (no restoration)"
    review_files = ("grid_golden.png",)

    @classmethod
    def review_choices(cls, labels: list[str]) -> list[str]:
        return ["accept", "reject"]  # the restored image is right, or it is not

    @classmethod
    def review_feedback(cls, answer: str) -> dict[str, Any]:
        return {"accepted": answer == "accept"}  # an accepted output becomes the target

    @classmethod
    def review_uncertainty(cls, record) -> float:
        """Image predictions carry no confidence: how much the model changed the input (mean
        absolute pixel change, 0-1) stands for it; the most changed is reviewed first."""

        if record.image_png_b64 is None or record.prediction_png_b64 is None:
            return 0.0
        try:
            given, restored = decode_png_b64(record.image_png_b64), decode_png_b64(record.prediction_png_b64)
        except ImageError:
            return 0.0  # the page shows what it can; the order does not hinge on it
        if given.shape != restored.shape:
            return 1.0
        return float(abs(given.astype("float32") - restored.astype("float32")).mean() / 255.0)

    @classmethod
    def review_view(cls, record) -> dict[str, Any]:
        second = "given target" if record.flag else "model output"  # a screened sample shows its target
        shown = (("input", record.image_png_b64), (second, record.prediction_png_b64))
        images = [{"caption": caption, "png_b64": data} for caption, data in shown if data is not None]
        return {"text": None, "images": images, "prediction": "restored image"}

    def screen_labels(self, champion, frame, labels: list[str], golden):
        """Each target: shifted against the champion's restoration of its input (phase
        correlation, aligning gains over ``SCREEN_ALIGN_GAIN_DB``), blurred (its own
        high-frequency power well under the golden targets'), or far from the restoration
        (PSNR well under the golden pairs'); see ``flywheel.tasks.label_checks``."""

        if not len(frame):
            return LabelFlags.none(0)
        reference = self._pair_checks(champion, golden.head(SCREEN_GOLDEN_PAIRS))
        golden_sharpness = [sharpness(self._target(uri)) for uri in golden["target_uri"]]
        min_sharp = (
            float(np.quantile(golden_sharpness, 0.01)) - SCREEN_SHARPNESS_MARGIN
            if golden_sharpness
            else -np.inf
        )
        min_psnr = (
            float(np.quantile([c.psnr_db for c in reference], 0.05)) - SCREEN_PSNR_MARGIN_DB
            if reference
            else -np.inf
        )
        reasons = []
        for c, uri in zip(self._pair_checks(champion, frame), frame["target_uri"], strict=True):
            dy, dx = c.shift
            sharp = sharpness(self._target(uri))
            if c.shift != (0, 0) and c.aligned_gain_db > SCREEN_ALIGN_GAIN_DB:
                reasons.append(
                    f"target shifted by {dx:+d},{dy:+d} px against the input "
                    f"(+{c.aligned_gain_db:.1f} dB once aligned)"
                )
            elif sharp < min_sharp:
                reasons.append(
                    f"target blurred: fine detail 10^{sharp:.1f} of mid-scale detail "
                    f"(golden targets: 10^{min_sharp:.1f} or more)"
                )
            elif c.psnr_db < min_psnr:
                reasons.append(
                    f"target far from the champion's restoration: {c.psnr_db:.1f} dB "
                    f"(golden pairs: {min_psnr:.1f} dB or more)"
                )
            else:
                reasons.append("")
        return LabelFlags(reasons, [None] * len(reasons))

    def _target(self, uri: str):
        """A stored target image as a [3, H, W] array in [0, 1] (the whole image, not a crop)."""

        return to_tensor(decode_png(self._store().get(uri), self.limits)).numpy()

    def _pair_checks(self, champion, frame) -> list:
        if not len(frame):
            return []
        data = self.dataset(frame, [])
        restored = predict(self, champion, data).clamp(0, 1).numpy()
        return [check_target(restored[i], data[i]["target"].float().numpy()) for i in range(len(data))]

    def flag_artifacts(self, champion, flagged, folder: Path) -> list[Path]:
        """``flagged_targets.png``: degraded | champion | given target for a few flagged samples."""

        sample = flagged.head(GRID_SAMPLES)
        if not len(sample):
            return []
        return [grid_png(self.dataset(sample, []), {"champion": champion}, folder / "flagged_targets.png")]

    def flagged_event(self, row, model_name: str, suggested) -> dict[str, Any] | None:
        """The input, and the given target in the place of a prediction: a reviewer who
        accepts it vouches for the target (``review_feedback``)."""

        store = self._store()
        as_b64 = lambda uri: base64.b64encode(store.get(uri)).decode("ascii")  # noqa: E731
        return feedback_event(
            str(row["sample_id"]),
            model_name,
            self.name,
            image_png_b64=as_b64(row["input_uri"]),
            prediction={"image_png_b64": as_b64(row["target_uri"])},
            label_source="system",
            source="label-screen",
        )

    def review_artifacts(self, report, roles: dict, golden, folder: Path) -> list[Path]:
        """``grid_golden.png``: degraded | champion | candidate | target for a few golden samples."""

        sample = golden.head(GRID_SAMPLES)
        if not len(sample):
            return []
        return [grid_png(self.dataset(sample, []), roles, folder / "grid_golden.png")]
