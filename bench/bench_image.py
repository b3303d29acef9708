"""Image-restoration benchmarks on real photo patches (the Swin2SR denoiser of the image task).

1. Throughput: training samples/s of plain LoRA and of LoRA + distillation (the frozen
   champion's forward at every step: image-sized teacher outputs are not cached), in one run
   on the same patches, after a warm-up.
2. Forgetting: a champion trained on one degradation (``--old``, Gaussian noise), updated on
   another (``--new``, JPEG artefacts) with (a) plain fine-tuning, (b) distillation,
   (c) distillation + replay of old-degradation patches. Prints the PSNR gain on the new
   degradation and the PSNR drop on the old one (golden photos, never trained on).

    python bench/bench_image.py [--champion 480] [--update 320] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import pandas as pd

    from flywheel.settings import load_settings
    from flywheel.tasks import spec_for
    from training.evaluate import evaluate
    from training.image_corpus import GOLDEN_PHOTOS, TRAIN_PHOTOS, restoration_frame
    from training.trainer import fit, load_adapter_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--champion", type=int, default=480, help="old-degradation patches for the champion")
    parser.add_argument("--update", type=int, default=320, help="new-degradation patches for the update")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--holdout", type=int, default=96)
    parser.add_argument("--old", default="noise:25")
    parser.add_argument("--new", default="jpeg:15")
    parser.add_argument("--throughput-samples", type=int, default=320)
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="flywheel-bench-image-"))
    settings = load_settings(
        state_dir=out,
        training={"epochs": args.epochs, "patience": args.epochs, "batch_size": 16, "learning_rate": 2e-3},
    )
    cfg = settings.training
    spec = spec_for(settings, "image-restoration")

    def frame(n, degradation, seed, photos):
        return spec.load_samples(restoration_frame(n, degradation, seed, photo_names=photos)).assign(
            confidence=1.0
        )

    champ_train = frame(args.champion, args.old, 0, TRAIN_PHOTOS)
    update = frame(args.update, args.new, 1, TRAIN_PHOTOS)
    replay = frame(args.update // 2, args.old, 2, TRAIN_PHOTOS)
    old_set = frame(args.holdout, args.old, 5, GOLDEN_PHOTOS)
    new_set = frame(args.holdout, args.new, 6, GOLDEN_PHOTOS)
    val_old, val_new = frame(48, args.old, 7, TRAIN_PHOTOS), frame(48, args.new, 8, TRAIN_PHOTOS)

    print(f"champion: {len(champ_train)} patches with {args.old}, {args.epochs} epochs", flush=True)
    champion_dir = out / "champion"
    fit(spec, [], champ_train, val_old, cfg, champion_dir)

    # 1. Throughput: one epoch on the same patches each, after a warm-up.
    sample = update.head(args.throughput_samples)
    one = cfg.model_copy(update={"epochs": 1, "min_steps": 0})
    warm = sample.head(cfg.batch_size * 4)
    fit(spec, [], warm, warm.head(0), one, out / "warm-up", champion_dir, progress=False)
    rates = {}
    for name, champion in (("plain LoRA", None), ("LoRA + distillation (teacher every step)", champion_dir)):
        t = time.perf_counter()
        r = fit(spec, [], sample, sample.head(0), one, out / f"rate-{len(rates)}", champion, progress=False)
        rates[name] = (r.samples_per_s, time.perf_counter() - t)
    base = rates["plain LoRA"][0]
    print("\n| variant | samples/s | ratio to plain LoRA |\n|---|---|---|")
    for name, (rate, _) in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} |")

    # 2. Forgetting: the same update three ways, judged on the golden photos.
    holdouts = {"old": old_set, "new": new_set}
    champion = load_adapter_model(spec, [], champion_dir)
    before = evaluate(
        spec, [], {"candidate": champion, "baseline": spec.load_baseline([], champion_dir)}, holdouts
    )
    variants = {
        "plain fine-tuning": (update, 0.0),
        "distillation": (update, cfg.distill_alpha),
        "distillation + replay": (pd.concat([update, replay], ignore_index=True), cfg.distill_alpha),
    }
    print(
        f"\nchampion ({args.old}): old {before.value('old', 'candidate'):.2f} dB, new "
        f"{before.value('new', 'candidate'):.2f} dB; degraded input: old "
        f"{before.value('old', 'baseline'):.2f} dB, new {before.value('new', 'baseline'):.2f} dB"
    )
    print(
        f"\n| update on {args.new} | new-set PSNR | gain | old-set PSNR | drop (forgetting) |"
        "\n|---|---|---|---|---|"
    )
    for name, (train, alpha) in variants.items():
        folder = out / name.replace(" ", "-")
        fit(spec, [], train, val_new, cfg.model_copy(update={"distill_alpha": alpha}), folder, champion_dir)
        after = evaluate(spec, [], {"candidate": load_adapter_model(spec, [], folder)}, holdouts)
        new, old = after.value("new", "candidate"), after.value("old", "candidate")
        gain = new - before.value("new", "candidate")
        drop = before.value("old", "candidate") - old
        print(f"| {name} | {new:.2f} dB | {gain:+.2f} dB | {old:.2f} dB | {drop:+.2f} dB |", flush=True)


if __name__ == "__main__":
    main()
