"""Erasure and lineage costs: forgetting one subject in a 1-million-row offline store, and
the bytes per sample id of a version's per-record lineage (``samples.parquet``).

    .venv/bin/python bench/bench_forget.py [--rows 1000000] [--files 1000]

The offline store is written the way the ingestor writes it (one parquet file per
micro-batch, ``feature_repo.store.write_offline_batch``); the subject's rows sit in a few
files. ``flywheel forget`` (``orchestration.forget.forget``) then runs end to end on that
state dir: tombstones, the scan, the rewrite of the affected files, the online store, the
review queue, the live ledger, the receipt. Prints a table of figures.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fill_offline(settings, rows: int, files: int, subject: str, subject_rows: int, seed: int = 0):
    """``rows`` text rows in ``files`` files; ``subject_rows`` of them, one per file, are the
    subject's (their ids are returned)."""
    from feature_repo.store import write_offline_batch

    rng = random.Random(seed)
    per_file = rows // files
    chosen = set(rng.sample(range(files), subject_rows))
    now = datetime(2026, 12, 1, tzinfo=UTC)
    ids = []
    for f in range(files):
        batch = []
        for r in range(per_file):
            i = f * per_file + r
            mine = f in chosen and r == 0
            batch.append(
                {
                    "sample_id": f"evt-{i:08d}",
                    "event_timestamp": now - timedelta(seconds=i),
                    "ingested_at": now,
                    "model_name": "sentiment",
                    "task": "text-classification",
                    "source": "app",
                    "label_source": "user",
                    "text": f"feedback number {i} about the product, mostly fine {rng.random():.6f}",
                    "label": rng.choice(["positive", "neutral", "negative"]),
                    "confidence": 1.0,
                    "subject": subject if mine else f"ps1:{rng.getrandbits(128):032x}",
                }
            )
            if mine:
                ids.append(batch[-1]["sample_id"])
        write_offline_batch(settings, batch, f"{f:08d}")
    return ids


def lineage_bytes(n: int, kind: str) -> float:
    import pandas as pd

    from training.version import SampleLineage

    ids = [uuid.uuid4().hex if kind == "uuid" else f"fb-{i:07d}" for i in range(n)]
    labels = ["positive", "neutral", "negative"]
    train = pd.DataFrame({"sample_id": ids, "label": [labels[i % 3] for i in range(n)], "origin": "new"})
    cut = int(n * 0.1)
    lineage = SampleLineage.of(train.iloc[cut:], train.iloc[:cut].drop(columns="origin"), {})
    path = Path(tempfile.mkdtemp()) / "samples.parquet"
    lineage.save(path)
    return path.stat().st_size / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--subject-rows", type=int, default=5)
    args = parser.parse_args()

    from feature_repo.store import apply_definitions, find_offline, offline_dir
    from flywheel.privacy import pseudonym, subject_key
    from flywheel.settings import load_settings
    from orchestration.forget import forget

    state = Path(tempfile.mkdtemp(prefix="flywheel-forget-"))
    settings = load_settings(state_dir=state / "state")
    apply_definitions(settings)
    subject = pseudonym(subject_key(settings), "alice@example.com")
    started = time.perf_counter()
    ids = fill_offline(settings, args.rows, args.files, subject, args.subject_rows)
    filled = time.perf_counter() - started
    before = {p.name: p.stat().st_mtime_ns for p in offline_dir(settings).glob("*.parquet")}
    size = sum(p.stat().st_size for p in offline_dir(settings).glob("*.parquet"))

    started = time.perf_counter()
    found = find_offline(settings, set(), {subject})
    scan = time.perf_counter() - started
    assert found.sample_ids == set(ids), (len(found.sample_ids), len(ids))

    started = time.perf_counter()
    receipt = forget(settings, subject_id="alice@example.com", log=lambda _m: None)
    total = time.perf_counter() - started
    after = {p.name: p.stat().st_mtime_ns for p in offline_dir(settings).glob("*.parquet")}
    changed = sorted(n for n in before if before[n] != after.get(n))
    assert not find_offline(settings, set(ids), {subject}).sample_ids

    shape = f"{args.rows:,} rows in {args.files:,} files, {size / 1e6:.0f} MB (written in {filled:.0f} s)"
    print(f"| offline store | {shape} |")
    print("|---|---|")
    print(f"| subject's rows / files holding them | {len(ids)} / {len(found.files)} |")
    print(f"| scan for the subject (subject and id columns only) | {scan:.2f} s |")
    print(f"| `forget --subject-id` end to end (all steps, receipt) | **{total:.2f} s** (goal ≤ 10 s) |")
    print(f"| files rewritten or removed / untouched | {len(changed)} / {len(before) - len(changed)} |")
    print(f"| rows removed (receipt) | {receipt.removed['feast_offline']['rows']} |")
    print()
    print("| per-record lineage (`samples.parquet`, zstd) | bytes per sample id |")
    print("|---|---|")
    for n in (10_000, 100_000):
        for kind in ("sequential", "uuid"):
            shown = "`fb-0000123`" if kind == "sequential" else "32 hex digits"
            print(f"| {n:,} ids, {kind} ({shown}) | {lineage_bytes(n, kind):.2f} |")
    print(f"(state in {state}; cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
