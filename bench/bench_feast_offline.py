"""Feast offline write cost: one 500-row micro-batch written with 10k and with 1M rows of
history, by the ingestor's append-only layout (``feature_repo.store.write_offline_batch``)
and by Feast's own offline push (which rewrites the whole file).

    python bench/bench_feast_offline.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flywheel.settings import load_settings  # noqa: E402


def offline_cost(batch_rows: int = 500, repeats: int = 5) -> list[dict]:
    import pandas as pd
    from feast.data_source import PushMode

    from feature_repo.definitions import CREATED, FEATURES, JOIN_KEY, PUSH_SOURCE, TIMESTAMP, build
    from feature_repo.store import offline_dir, open_store, write_offline_batch

    def rows(n: int, start: int) -> pd.DataFrame:
        now = pd.Timestamp.now(tz="UTC")
        return pd.DataFrame(
            {
                JOIN_KEY: [f"s{start + i}" for i in range(n)],
                TIMESTAMP: now,
                CREATED: now,
                "model_name": "sentiment",
                "model_version": "1",
                "task": "text-classification",
                "source": "bench",
                "text": [f"some feedback text number {start + i}" for i in range(n)],
                "image_png_b64": None,
                "label": "positive",
                "pred_label": "negative",
                "confidence": 0.7,
                "low_confidence": False,
                "label_source": "user",
                "pii_masks": 0,
            },
            columns=[JOIN_KEY, TIMESTAMP, CREATED, *FEATURES],
        )

    results = []
    for history in (10_000, 1_000_000):
        settings = load_settings(state_dir=Path(tempfile.mkdtemp(prefix="flywheel-bench-")))
        store = open_store(settings)
        # History as the ingestor leaves it: files of 5,000 rows.
        for k in range(0, history, 5_000):
            write_offline_batch(settings, rows(5_000, k), f"history-{k:08d}")
        append = []
        for r in range(repeats):
            batch = rows(batch_rows, history + r * batch_rows)
            t = time.perf_counter()
            write_offline_batch(settings, batch, f"bench-{r}")
            append.append(time.perf_counter() - t)
        # Feast's own offline push on the same history held as one file (how it stores it).
        single = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
        settings2 = load_settings(state_dir=single)
        store2 = open_store(settings2)
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        table = ds.dataset(str(offline_dir(settings)), format="parquet").to_table()
        folder = offline_dir(settings2)
        for f in folder.glob("*.parquet"):
            f.unlink()
        pq.write_table(table, folder / "all.parquet")
        store2.apply(list(build(folder / "all.parquet").values()))  # a single-file source
        feast_push = []
        for r in range(2):
            batch = rows(batch_rows, 10_000_000 + r * batch_rows)
            t = time.perf_counter()
            store2.push(PUSH_SOURCE, batch, to=PushMode.OFFLINE)
            feast_push.append(time.perf_counter() - t)
        del store
        results.append(
            {
                "history": history,
                "append_ms": 1000 * sorted(append)[len(append) // 2],
                "feast_push_ms": 1000 * sorted(feast_push)[0],
            }
        )
    return results


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("offline write cost of one 500-row micro-batch (median):")
    print(f"  {'history rows':>12}  {'append-only file':>16}  {'Feast offline push':>18}")
    rows = offline_cost()
    for r in rows:
        print(f"  {r['history']:>12,}  {r['append_ms']:>13.1f} ms  {r['feast_push_ms']:>15.1f} ms")
    a, b = rows
    print(
        f"  1M/10k ratio: append-only {b['append_ms'] / a['append_ms']:.2f}x, "
        f"Feast offline push {b['feast_push_ms'] / a['feast_push_ms']:.1f}x"
    )


if __name__ == "__main__":
    main()
