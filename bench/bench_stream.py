"""Stream benchmarks: end-to-end produce → Feast-online latency, and offline write cost.

1. End to end: the embedded broker, the PyFlink job (unbounded, its own process, as
   `flywheel stream run`) and the Feast ingestor (in this process). Events are produced at
   a fixed offered load; each event's latency is the time from its produce call until the
   ingestor's online push containing it returned. Prints throughput and p50/p99 latency.
   The exactly-once sinks make records visible when a checkpoint completes, so latency
   follows ``stream.checkpoint_interval_ms`` (measured at two intervals).
2. Offline write cost: one 500-row micro-batch written with 10k and with 1M rows of
   history, by the append-only layout and by Feast's own offline push (which rewrites).

    python bench/bench_stream.py [--rate 1000] [--seconds 20] [--skip-e2e] [--skip-offline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flywheel.broker import EmbeddedBroker, free_port  # noqa: E402
from flywheel.events import feedback_event  # noqa: E402
from flywheel.kafka import Topics, ensure_topics, producer_config  # noqa: E402
from flywheel.settings import load_settings  # noqa: E402


def event(i: int, now: datetime) -> dict:
    return feedback_event(
        f"bench-{i:08d}",
        "sentiment",
        text=f"event {i}: mail me at someone{i}@example.com, it was fine",
        prediction={"label": "positive", "confidence": 0.9},
        feedback={"label": "positive"},
        label_source="user",
        source="bench",
        model_version="1",
        event_time=now,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def end_to_end(broker_port: int, rate: int, seconds: int, checkpoint_ms: int) -> dict:
    from confluent_kafka import Producer

    from feature_repo.store import open_store
    from pipelines.ingest import Ingestor

    state = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    prefix = f"bench{checkpoint_ms}x{int(time.time())}"
    settings = load_settings(
        state_dir=state,
        broker={"port": broker_port},
        kafka={"topic_prefix": prefix},
        stream={"checkpoint_interval_ms": checkpoint_ms},
        feast={"ingest_batch_ms": 200},
    )
    ensure_topics(settings)
    env = {
        **os.environ,
        "FLYWHEEL_STATE_DIR": str(state),
        "FLYWHEEL_BROKER__PORT": str(broker_port),
        "FLYWHEEL_KAFKA__TOPIC_PREFIX": prefix,
        "FLYWHEEL_STREAM__CHECKPOINT_INTERVAL_MS": str(checkpoint_ms),
    }
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.stream_job"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    produced: dict[str, float] = {}
    visible: dict[str, float] = {}

    class TimedIngestor(Ingestor):
        def _write(self, frame, offsets):
            super()._write(frame, offsets)
            now = time.perf_counter()
            for sample_id in frame["sample_id"]:
                visible.setdefault(sample_id, now)

    ingestor = TimedIngestor(settings, open_store(settings), log=lambda m: None)
    thread = threading.Thread(target=ingestor.run, daemon=True)
    thread.start()
    try:
        # Warm-up: wait until the job has started and one event made it through.
        producer = Producer(producer_config(settings))
        topic = Topics.from_settings(settings).raw
        producer.produce(topic, key=b"warmup", value=json.dumps(event(-1, datetime.now(UTC))).encode())
        producer.flush(10)
        deadline = time.monotonic() + 120
        while "bench--0000001" not in visible and time.monotonic() < deadline:
            if job.poll() is not None:
                raise SystemExit("stream job died during warm-up")
            time.sleep(0.2)
        visible.clear()
        total = rate * seconds
        start = time.perf_counter()
        for i in range(total):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            ev = event(i, datetime.now(UTC))
            produced[ev["event_id"]] = time.perf_counter()
            producer.produce(topic, key=ev["event_id"].encode(), value=json.dumps(ev).encode())
            producer.poll(0)
        producer.flush(30)
        offered_s = time.perf_counter() - start
        deadline = time.monotonic() + 120
        while len(visible) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        end = max(visible.values()) if visible else time.perf_counter()
    finally:
        ingestor.stop()
        thread.join(30)
        os.killpg(job.pid, 9)
        job.wait()
    latencies = [visible[k] - produced[k] for k in produced if k in visible]
    return {
        "checkpoint_ms": checkpoint_ms,
        "offered": rate,
        "events": total,
        "visible": len(latencies),
        "produce_s": offered_s,
        "throughput": len(latencies) / (end - start),
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
    }


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=400, help="offered load, events/s")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-offline", action="store_true")
    args = parser.parse_args()

    if not args.skip_offline:
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

    if not args.skip_e2e:
        broker = EmbeddedBroker(Path(tempfile.mkdtemp(prefix="flywheel-bench-")), port=free_port())
        broker.start()
        try:
            print(
                f"\nend to end, produce → Feast online, offered {args.rate:,} events/s for {args.seconds}s:"
            )
            print(
                f"  {'checkpoint':>10}  {'events':>7}  {'visible':>7}  {'events/s':>8}"
                f"  {'p50':>7}  {'p99':>7}"
            )
            for checkpoint_ms in (1000, 5000):
                r = end_to_end(broker.port, args.rate, args.seconds, checkpoint_ms)
                print(
                    f"  {r['checkpoint_ms']:>8} ms  {r['events']:>7,}  {r['visible']:>7,}  "
                    f"{r['throughput']:>8,.0f}  {r['p50']:>6.2f}s  {r['p99']:>6.2f}s",
                    flush=True,
                )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
