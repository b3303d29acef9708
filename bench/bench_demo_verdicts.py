"""Do `make demo`'s verdicts reproduce? (issue 12) The demo's decisions, replayed without the stream.

`make demo` takes ~8 minutes, most of it the stack (broker, PyFlink, Feast). This replays
the same decisions on the same data with the same code: the demo's corpus split
(``demo.traffic.corpus_split``), its settings, a v1 bootstrap split as
``flywheel model bootstrap`` splits, then three traffic rounds whose labelled samples (users
label or confirm ~70 %, a reviewer part of the rest) go through the retrain's dataset
assembly (``training.dataset.assemble``: hash splits, replay, holdouts), ``fit``,
``evaluate`` and the promotion gate (``orchestration.promotion.decide``), after the label
screen (the champion judges the window; too many flagged: refused before fitting, else the
flagged are left out). Round 3's labels are corrupted. Each run uses another seed for
training and for which samples get labels, so the table shows whether the verdicts hold
beyond one lucky run.

    python bench/bench_demo_verdicts.py [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def labelled_share(chunk, corrupt: bool, rng: random.Random):
    """The samples of a traffic round that come back labelled (users ~70 %, reviewers ~10 %)."""
    from demo.traffic import ROTATE

    keep = [rng.random() < 0.78 for _ in range(len(chunk))]
    rows = chunk[keep].copy()
    if corrupt:
        rows["label"] = rows["label"].map(ROTATE)
    rows["sample_id"] = [f"r-{s}" for s in rows["sample_id"]]
    rows["confidence"] = 1.0
    return rows


def one_run(seed: int, tmp: Path) -> list[dict]:
    import pandas as pd

    from demo.traffic import LABELS, corpus_split, demo_settings
    from flywheel.tasks.text import TextClassification
    from orchestration.promotion import Reference, decide
    from training.data import split_by_hash, stratified_sample
    from training.dataset import assemble
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model, version_roles

    settings = demo_settings()
    cfg = settings.training.model_copy(update={"seed": seed})
    rules = settings.promotion
    adapter = TextClassification()
    golden, boot, rounds, _ = corpus_split(seed_n=400, golden_n=400, rounds=3, round_n=1000)
    boot = boot.assign(confidence=1.0)
    rng = random.Random(7 + seed)

    train, val, old_holdout = split_by_hash(boot, cfg.holdout_fraction, cfg.validation_fraction)
    fit(adapter, LABELS, train, val, cfg, tmp / "v1", progress=False)
    roles = version_roles(adapter, LABELS, tmp / "v1")
    holdouts = {"golden": golden, "old": stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed)}
    report = evaluate(adapter, LABELS, roles, holdouts, cfg.eval_batch_size)
    verdict = decide(report, rules, "sentiment", "text-classification", first=True)
    rows = [_row(1, "bootstrap", len(boot), report, verdict)]
    champion, old = (tmp / "v1") if verdict.passed else None, boot
    # the ratchet's reference: the best golden score among the promoted versions
    best = Reference(1, report.value("golden", "candidate")) if verdict.passed else None
    for i, chunk in enumerate(rounds, start=1):
        if champion is None:
            break
        corrupt = i == len(rounds)
        new = labelled_share(chunk, corrupt, rng)
        kind = "corrupted" if corrupt else "traffic"
        # the label screen, as the retrain flow runs it: the champion judges the new window
        flags = adapter.screen_labels(load_adapter_model(adapter, LABELS, champion), new, LABELS, golden)
        flagged = [bool(r) for r in flags.reasons]
        share = sum(flagged) / len(new)
        if share > settings.training.label_screen.max_flagged_share:
            rows.append(_refused(i + 1, kind, len(new), share))
            continue
        new = new[[not f for f in flagged]]
        data = assemble(cfg, adapter, new, old, golden, (None, datetime.now(UTC)))
        folder = tmp / f"v{i + 1}"
        fit(adapter, LABELS, data.train, data.validation, cfg, folder, champion, progress=False)
        roles = version_roles(adapter, LABELS, folder, champion)
        report = evaluate(adapter, LABELS, roles, data.holdouts, cfg.eval_batch_size)
        verdict = decide(report, rules, "sentiment", "text-classification", first=False, reference=best)
        rows.append(_row(i + 1, kind, len(new), report, verdict, share))
        if verdict.passed:
            champion, old = folder, pd.concat([old, new])
            golden_now = report.value("golden", "candidate")
            if golden_now is not None and golden_now > best.value:
                best = Reference(i + 1, golden_now)
    return rows


def _refused(version: int, kind: str, new: int, share: float) -> dict:
    nothing = {k: None for k in ("probe", "golden", "champion", "old")}
    why = f"labels_suspect: {100 * share:.0f} % of the labels flagged"
    return {
        "version": version,
        "kind": kind,
        "new": new,
        **nothing,
        "verdict": "data-rejected",
        "why": why,
        "flagged": share,
    }


def _row(version: int, kind: str, new: int, report, verdict, flagged: float = 0.0) -> dict:
    return {
        "flagged": flagged,
        "version": version,
        "kind": kind,
        "new": new,
        "probe": report.value("golden", "baseline"),
        "golden": report.value("golden", "candidate"),
        "champion": report.value("golden", "champion"),
        "old": report.value("old", "candidate"),
        "verdict": verdict.label,
        "why": "; ".join(verdict.reasons) or "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    expected = ["promoted", "promoted", "promoted", "rejected"]
    refused = ["promoted", "promoted", "promoted", "data-rejected"]  # the screen stopped the bad update
    sequences = []
    for seed in range(args.runs):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            rows = one_run(seed, Path(tmp))
        print(f"run {seed + 1} (seed {seed}, {time.perf_counter() - started:.0f} s)")
        head = f"  {'ver':4} {'data':10} {'new':>5} {'flagged':>7} {'probe':>6} {'golden':>7} {'champ':>6}"
        head += f" {'old':>6}"
        print(head + "  verdict")
        for r in rows:
            f = {k: "-" if r[k] is None else f"{r[k]:.3f}" for k in ("probe", "golden", "champion", "old")}
            print(
                f"  v{r['version']:<3} {r['kind']:10} {r['new']:5d} {100 * r['flagged']:6.1f}% "
                f"{f['probe']:>6} {f['golden']:>7} {f['champion']:>6} {f['old']:>6}  {r['verdict']}"
                + (f" ({r['why']})" if r["why"] != "-" else ""),
                flush=True,
            )
        sequences.append([r["verdict"] for r in rows])
    same = sum(s in (expected, refused) for s in sequences)
    print(
        f"verdicts as intended (v1-v3 promoted, the corrupted round rejected at the gate or refused by the "
        f"label screen) in {same} of {len(sequences)} runs"
    )


if __name__ == "__main__":
    main()
