"""The image-restoration task's policy: the primary metric, the promotion gate's default guards,
floors, baseline and ratchet."""

from __future__ import annotations

from flywheel.settings import Guard
from flywheel.tasks.image.fields import ImageFields


class ImagePolicy(ImageFields):
    """The policy facet of the image task's spec."""

    primary_metric = "psnr"
    live_metric = "psnr"
    live_tolerance = 0.5  # dB: a promoted denoiser may not do worse than this on live traffic
    live_unit = " dB"
    shown_metrics = ("psnr", "ssim")
    default_min_new_samples = 200  # a clean target costs a user more than a label

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
