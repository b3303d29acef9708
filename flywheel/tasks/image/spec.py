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

from flywheel.images import (
    ImageLimits,
    open_image_store,
)
from flywheel.tasks.image.data import PATCH, ImageData
from flywheel.tasks.image.model import ImageModel, _net_config
from flywheel.tasks.image.policy import ImagePolicy
from flywheel.tasks.image.review import ImageReview
from flywheel.tasks.image.serving import ImageServing
from flywheel.tasks.registry import register


@register
class ImageRestoration(ImageData, ImageModel, ImageServing, ImageReview, ImagePolicy):
    name = "image-restoration"

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

    def serving_meta(self, record) -> dict:
        return {"limits": [self.limits.min_side, self.limits.max_side, self.limits.max_pixels]}

    @classmethod
    def from_serving_meta(cls, meta: dict) -> ImageRestoration:
        limits = ImageLimits(*meta["limits"]) if meta.get("limits") else None
        return cls(limits=limits)
