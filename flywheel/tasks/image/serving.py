"""The image-restoration task's serving: the pyfunc's input and answer, the smoke test, the live value
of a labelled prediction."""

from __future__ import annotations

import base64
from typing import Any

from flywheel.images import (
    ImageError,
    ImageLimits,
    decode_png_b64,
    png_b64,
)
from flywheel.lazy import lazy_import
from flywheel.tasks.base import cpu_threads, pick_device
from flywheel.tasks.image.fields import ImageFields
from flywheel.tasks.image.network import (  # a cheap import: no torch
    to_tensor,
    to_uint8,
)
from flywheel.tasks.label_checks import psnr_db

np = lazy_import("numpy")
pd = lazy_import("pandas")


class ImageServing(ImageFields):
    """The serving facet of the image task's spec."""

    serving_input = "image_png_b64"
    serving_output = "image_png_b64"

    def serve(self, model, model_input, labels: list[str]):
        """``image_png_b64`` column → restored PNGs (any size within the limits, one at a time)."""
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

        store = self._store()
        texts = [base64.b64encode(store.get(u)).decode() for u in golden["input_uri"].head(2)]
        return pd.DataFrame({"image_png_b64": texts})

    @classmethod
    def serving_smoke(cls):

        ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8)[:, None, None], (1, 16, 3))
        return pd.DataFrame({"image_png_b64": [png_b64(ramp)]})

    @classmethod
    def answer(cls, row: dict[str, Any]) -> dict[str, Any]:
        return {"image_png_b64": str(row["image_png_b64"])}

    @classmethod
    def live_value(cls, record) -> float | None:
        """PSNR (dB) of the predicted image against the target the user gave. Only explicit
        targets count: an accept (or a reject) says nothing about the pixels. The PNGs were
        checked by the event contract (or written by the serving app)."""

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
