"""The ``image-restoration`` task: a small Swin2SR denoiser (no hub weights) with LoRA.

* **Samples** are an input (degraded) image and its target (clean) image. Their bytes live
  in the image store, content-addressed by sha256 (``flywheel.images``); Feast rows and the
  datasets hold URIs, hashes and sizes, and a ``Dataset`` reads the PNGs one at a time.
* **Training** crops every image of a dataset to the same centre square (so a batch stacks):
  ``patch`` pixels, or the smallest side in the dataset when that is smaller; an image with
  a side under ``MIN_SIDE`` (SSIM's window needs room) is quarantined by the data gate.
  The model is built from
  ``RestorationNetConfig`` (saved beside each version as ``adapter_net.json``); LoRA adapts
  the attention projections, the first and last convolutions train in full. Task loss:
  Charbonnier to the target; distillation: L2 to the frozen champion's output, computed at
  each step (teacher outputs are image-sized, so they are not cached for the whole set).
* **Metrics**: PSNR (dB) and SSIM per sample; the primary metric is PSNR.
* **Baseline**: the degraded input itself (identity). A first version must beat it on golden
  PSNR by ``promotion.baseline.min_gain`` (0.5 dB by default); a retrain may not lose more
  than 0.2 dB of the champion's golden or old-set PSNR (paired test; chosen from measured
  retraining noise) nor sit more than 0.3 dB below the best promoted version (the ratchet).
* **Serving**: an ``image_png_b64`` column of PNGs → restored PNGs in ``image_png_b64``.
* **Review**: a grid PNG, degraded | champion | candidate | target, for a few golden samples.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from flywheel.errors import DataError, FlywheelError
from flywheel.events import feedback_event
from flywheel.images import (
    ImageError,
    ImageLimits,
    check_pair,
    decode_png,
    decode_png_b64,
    open_image_store,
    png_b64,
    sha256_hex,
)
from flywheel.settings import Guard
from flywheel.tasks.base import Suite, TaskSpec, cpu_threads, pick_device, predict, read_table, shown
from flywheel.tasks.image_model import (  # a cheap import: no torch
    LORA_TARGETS,
    MODULES_TO_SAVE,
    RestorationNetConfig,
    build_denoiser,
    charbonnier,
    psnr,
    ssim,
    to_tensor,
    to_uint8,
)
from flywheel.tasks.image_review import grid_png
from flywheel.tasks.label_checks import LabelFlags, psnr_db, sharpness
from flywheel.tasks.label_checks import check_pair as check_target
from flywheel.tasks.registry import register

NET_FILE = "adapter_net.json"  # "adapter_*": copied with the adapter into MLflow
PATCH = 48
MIN_SIDE = 16  # smallest side a sample may have: SSIM's 11x11 window must fit
GRID_SAMPLES = 4
# The target screen (screen_labels), calibrated on the golden pairs (bench/bench_label_screen.py):
SCREEN_GOLDEN_PAIRS = 32  # golden pairs the distance threshold is measured on (a forward pass each)
SCREEN_ALIGN_GAIN_DB = 1.0  # a shift counts when aligning gains more than this
SCREEN_SHARPNESS_MARGIN = (
    0.5  # blurred: 10^0.5 times less fine detail than the golden targets' 1st percentile
)
SCREEN_PSNR_MARGIN_DB = 6.0  # far: this much under the golden pairs' 5th percentile


def _net_config(overrides: dict | None = None):

    return RestorationNetConfig.from_dict({**RestorationNetConfig().to_dict(), **(overrides or {})})


class ImageDataset:
    """Input/target pairs read from the image store one at a time, centre-cropped to one square:
    ``patch`` pixels, or the frame's smallest side when that is smaller."""

    def __init__(self, frame, store, limits, patch: int):
        self.inputs = list(frame["input_uri"])
        self.targets = list(frame["target_uri"]) if "target_uri" in frame else None
        self.store, self.limits = store, limits
        sides = [patch]
        for column in ("width", "height"):
            if column in frame and len(frame):
                sides.append(int(frame[column].min()))
        self.patch = max(1, min(sides))

    def __len__(self) -> int:
        return len(self.inputs)

    def _image(self, uri: str):

        return _center_crop(to_tensor(decode_png(self.store.get(uri), self.limits)), self.patch)

    def __getitem__(self, i: int) -> dict:
        item = {"pixel_values": self._image(self.inputs[i])}
        if self.targets is not None:
            item["target"] = self._image(self.targets[i])
        return item


def _center_crop(image, size: int):
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise FlywheelError(
            f"an image of {w}x{h} is smaller than its dataset's crop ({size} px): its size in the "
            "Feast row (width, height) does not match the stored image"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def degraded_input():
    """The baseline: the degraded input returned as it is (what you get without a model)."""
    import torch

    return torch.nn.Identity()


@register
class ImageRestoration(TaskSpec):
    name = "image-restoration"
    lora_targets = list(LORA_TARGETS)
    modules_to_save = list(MODULES_TO_SAVE)
    primary_metric = "psnr"
    live_metric = "psnr"
    live_tolerance = 0.5  # dB: a promoted denoiser may not do worse than this on live traffic
    live_unit = " dB"
    shown_metrics = ("psnr", "ssim")
    sample_columns = ["input_uri", "input_sha256", "target_uri", "target_sha256", "width", "height"]
    feast_fields = {
        "input_uri": "String",
        "input_sha256": "String",
        "target_uri": "String",
        "target_sha256": "String",
        "prediction_uri": "String",
        "width": "Int64",
        "height": "Int64",
    }
    strata = None
    cache_teacher = False
    baseline_caption = "baseline: the degraded input itself (no restoration)"
    serving_input = "image_png_b64"
    serving_output = "image_png_b64"
    default_min_new_samples = 200  # a clean target costs a user more than a label
    cpu_threads = 1  # see flywheel.tasks.base.cpu_threads: one thread is faster for this network
    review_files = ("grid_golden.png",)

    def __init__(self, store=None, limits=None, net: dict | None = None, patch: int = PATCH):

        self.store = store
        self.limits = limits or ImageLimits()
        self.net = _net_config(net)
        self.patch = patch

    @classmethod
    def from_settings(cls, settings) -> ImageRestoration:

        cfg = settings.images
        limits = ImageLimits(cfg.min_side, cfg.max_side, cfg.max_pixels)
        return cls(open_image_store(settings.image_store_uri), limits, cfg.net, cfg.patch)

    def _store(self):
        if self.store is None:
            raise FlywheelError(
                "this image-restoration spec has no image store; build it with spec_for(settings)"
            )
        return self.store

    # ---- data -----------------------------------------------------------------------

    @classmethod
    def feast_columns(cls, record, images) -> dict[str, Any]:
        """Writes the input, target and predicted images to the store; the row keeps their
        URIs, hashes and the input's size. The stream job checked the PNGs; they are checked
        again against the contract's bounds (a record written to the clean topic by anything
        else must not make the ingestor decode a bomb), and one that fails raises
        FlywheelError naming the image, before anything is written."""

        if images is None:
            raise FlywheelError("image events need an image store (settings.images.store_uri)")
        found = {}
        for key, text in (
            ("input", record.image_png_b64),
            ("target", record.target_png_b64),
            ("prediction", record.prediction_png_b64),
        ):
            if text is None:
                continue
            try:
                data = base64.b64decode(text, validate=True)
                found[key] = (data, decode_png(data).shape[:2])
            except (ImageError, ValueError) as exc:
                raise FlywheelError(f"its {key} image is unusable: {exc}") from exc
        row: dict[str, Any] = {}
        for key, (data, (h, w)) in found.items():
            row[f"{key}_uri"] = images.put(data)
            if key != "prediction":
                row[f"{key}_sha256"] = sha256_hex(data)
            if key == "input":
                row["width"], row["height"] = w, h
        return row

    def is_sample(self, frame):
        return frame["input_uri"].notna() & frame["target_uri"].notna()

    def load_samples(self, path):
        """A JSONL/CSV file (or a DataFrame), a pair per line: ``input_png_b64`` +
        ``target_png_b64``, or ``input_path`` + ``target_path`` (relative to the file). The
        images are checked (PNG, size bounds, same size) and written to the image store."""
        import pandas as pd

        if isinstance(path, pd.DataFrame):
            if "input_uri" in path:  # already samples of the store
                return path.copy()
            frame, path = path, Path("<frame>")
        else:
            path = Path(path)
            frame = read_table(path, "input_png_b64/target_png_b64 or input_path/target_path columns")
        store = self._store()
        rows, bad = [], []
        for line, rec in enumerate(frame.to_dict("records"), start=1):
            try:
                pair = [self._read_image(rec, side, path.parent) for side in ("input", "target")]
                arrays = [decode_png(data, self.limits) for data in pair]
                check_pair(*arrays)
            except (ImageError, DataError, ValueError) as exc:
                bad.append(f"line {line} ({rec['sample_id']}): {exc}")
                continue
            h, w = arrays[0].shape[:2]
            rows.append(
                {
                    "sample_id": rec["sample_id"],
                    "input_uri": store.put(pair[0]),
                    "input_sha256": sha256_hex(pair[0]),
                    "target_uri": store.put(pair[1]),
                    "target_sha256": sha256_hex(pair[1]),
                    "width": w,
                    "height": h,
                }
            )
        if bad:
            shown = "; ".join(bad[:5])
            raise DataError(f"{path}: {len(bad)} of {len(frame)} image pairs cannot be used: {shown}")
        return pd.DataFrame(rows, columns=["sample_id", *self.sample_columns])

    @staticmethod
    def _read_image(rec: dict, side: str, folder: Path) -> bytes:
        text, file = rec.get(f"{side}_png_b64"), rec.get(f"{side}_path")
        if isinstance(text, str):
            try:
                return base64.b64decode(text, validate=True)
            except ValueError as exc:
                raise DataError(f"{side}_png_b64 is not valid base64 ({exc})") from exc
        if isinstance(file, str):
            target = (folder / file).resolve()
            if not target.is_file():
                raise DataError(f"{side}_path {file!r} is not a file (paths are relative to the data file)")
            return target.read_bytes()
        raise DataError(f"no {side}_png_b64 or {side}_path")

    def quarantine_reasons(self, frame, labels: list[str], gate, mark) -> None:
        for side in ("input", "target"):
            uri, digest = frame[f"{side}_uri"], frame[f"{side}_sha256"]
            mark(uri.isna(), f"{side} image missing")
            mark(~uri.map(lambda v: isinstance(v, str)), f"{side} image URI is not a string")
            mark(
                ~pd_map(uri, digest, lambda u, d: isinstance(d, str) and str(u).endswith(f"{d}.png")),
                f"{side} image URI does not match its sha256",
            )
        small = (frame["width"].astype(float) < MIN_SIDE) | (frame["height"].astype(float) < MIN_SIDE)
        mark(small, f"image side under {MIN_SIDE} px")

    def shown_example(self, row) -> dict[str, Any]:

        return {"input": shown(row["input_uri"], 80), "size": f"{row['width']}x{row['height']}"}

    def expectations(self, frame, labels: list[str], gate) -> list[Suite]:
        import great_expectations as gx

        ex = gx.expectations
        sha = r"^[0-9a-f]{64}$"
        return [
            Suite(
                frame[["input_uri", "input_sha256", "target_uri", "target_sha256", "width", "height"]],
                [
                    ex.ExpectColumnValuesToNotBeNull(column="input_uri"),
                    ex.ExpectColumnValuesToNotBeNull(column="target_uri"),
                    ex.ExpectColumnValuesToMatchRegex(column="input_sha256", regex=sha),
                    ex.ExpectColumnValuesToMatchRegex(column="target_sha256", regex=sha),
                    ex.ExpectColumnValuesToBeBetween(column="width", min_value=MIN_SIDE),
                    ex.ExpectColumnValuesToBeBetween(column="height", min_value=MIN_SIDE),
                ],
            )
        ]

    def dataset(self, frame, labels: list[str]) -> ImageDataset:
        return ImageDataset(frame, self._store(), self.limits, self.patch)

    # ---- model ----------------------------------------------------------------------

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

    # ---- metrics --------------------------------------------------------------------

    def evidence(self, outputs, batch: dict) -> dict[str, list]:

        target = batch["target"].float()
        out = outputs.float().clamp(0, 1)
        return {"psnr": psnr(out, target).tolist(), "ssim": ssim(out, target).tolist()}

    def per_sample(self, evidence: dict[str, list]) -> dict[str, list[float]]:
        return {"psnr": list(evidence["psnr"]), "ssim": list(evidence["ssim"])}

    def metrics(self, evidence: dict[str, list], labels: list[str]) -> dict[str, Any]:
        n = len(evidence.get("psnr", []))
        return {k: (sum(evidence[k]) / n if n else float("nan")) for k in ("psnr", "ssim")}

    # ---- promotion ------------------------------------------------------------------

    @classmethod
    def default_guards(cls) -> list:

        return [
            # absolute dB, from measured retraining noise (bench/bench_image_verdicts.py: seed
            # std 0.04 dB, noise-only lower bounds up to +0.055 dB): 0.2 dB is ~5 sd; the 5 %
            # relative rule (1.5 dB at 30 dB) promoted a visibly worse round. Rolling back a
            # live champion keeps its own, wider rule (monitor.tolerance).
            Guard(metric="psnr", holdout="golden", tolerance=0.2, relative=False, detect=0.5),
            Guard(metric="psnr", holdout="old", tolerance=0.2, relative=False, detect=0.5),
        ]

    @classmethod
    def baseline_guard(cls, rules, metric: str):
        """Not worse than the degraded input, judged relatively (PSNR is in dB, not a share)."""

        return Guard(metric=metric, holdout=rules.holdout, tolerance=0.0, relative=True, detect=0.05)

    @classmethod
    def default_baseline_gain(cls) -> float | None:
        return 0.5

    @classmethod
    def default_ratchet_budget(cls) -> float | None:
        return 0.3  # dB below the best promoted version's golden PSNR, in all

    # ---- serving and review ---------------------------------------------------------

    def serving_meta(self, record) -> dict:
        return {"limits": [self.limits.min_side, self.limits.max_side, self.limits.max_pixels]}

    @classmethod
    def from_serving_meta(cls, meta: dict) -> ImageRestoration:

        limits = ImageLimits(*meta["limits"]) if meta.get("limits") else None
        return cls(limits=limits)

    def serve(self, model, model_input, labels: list[str]):
        """``image_png_b64`` column → restored PNGs (any size within the limits, one at a time)."""
        import pandas as pd
        import torch

        device = pick_device()[0]
        model.eval()
        model.to(device)
        out = []
        with torch.inference_mode(), cpu_threads(self):
            for text in model_input["image_png_b64"]:
                image = to_tensor(decode_png_b64(str(text), self.limits)).unsqueeze(0).to(device)
                restored = model(image).float().clamp(0, 1)[0].cpu()
                out.append(png_b64(to_uint8(restored)))
        return pd.DataFrame({"image_png_b64": out})

    def serving_example(self, golden):
        import pandas as pd

        store = self._store()
        texts = [base64.b64encode(store.get(u)).decode() for u in golden["input_uri"].head(2)]
        return pd.DataFrame({"image_png_b64": texts})

    @classmethod
    def serving_smoke(cls):
        import numpy as np
        import pandas as pd

        ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8)[:, None, None], (1, 16, 3))
        return pd.DataFrame({"image_png_b64": [png_b64(ramp)]})

    @classmethod
    def answer(cls, row: dict[str, Any]) -> dict[str, Any]:
        return {"image_png_b64": str(row["image_png_b64"])}

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

    @classmethod
    def live_value(cls, record) -> float | None:
        """PSNR (dB) of the predicted image against the target the user gave. Only explicit
        targets count: an accept (or a reject) says nothing about the pixels. The PNGs were
        checked by the event contract (or written by the serving app)."""
        import numpy as np

        predicted, target = record.prediction_png_b64, record.given_target_png_b64
        if predicted is None or target is None:
            return None
        try:
            a = decode_png_b64(predicted, ImageLimits(1, 4096, 4096 * 4096)).astype(np.float64)
            b = decode_png_b64(target, ImageLimits(1, 4096, 4096 * 4096)).astype(np.float64)
        except ImageError:
            return None
        if a.shape != b.shape:
            return None

        return psnr_db(a, b, peak=255.0)

    # ---- targets screened before training ---------------------------------------------

    def screen_labels(self, champion, frame, labels: list[str], golden):
        """Each target: shifted against the champion's restoration of its input (phase
        correlation, aligning gains over ``SCREEN_ALIGN_GAIN_DB``), blurred (its own
        high-frequency power well under the golden targets'), or far from the restoration
        (PSNR well under the golden pairs'); see ``flywheel.tasks.label_checks``."""
        import numpy as np

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


def pd_map(a, b, fn):
    """``fn(x, y)`` over two aligned Series, as a boolean Series."""
    import pandas as pd

    return pd.Series([bool(fn(x, y)) for x, y in zip(a, b, strict=True)], index=a.index)
