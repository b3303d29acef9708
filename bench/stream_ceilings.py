"""Ceilings for the stream benchmark, measured in the same run as the pipeline:

- the broker alone: the generator floods a topic (confluent-kafka, the SDK's producer
  settings) while a consumer in the benchmark reads it (read_committed); events per second
  from the first send to the last record read;
- PyFlink identity jobs: a backlog in ``<prefix>.raw`` copied to ``<prefix>.clean`` by the
  stream job's own source (the Kafka table connector) and exactly-once sinks, with the
  same checkpointing, parallelism and jars (``pipelines.stream_job.make_env``):
  ``sql``: no Python at all (``INSERT INTO ... SELECT k, v``), the JVM's ceiling;
  ``python``: one trivial Python scalar UDF (bytes → str) in the job's execution mode
  (``stream.execution_mode``, thread by default), the ceiling of the JVM ↔ Python hop the
  real job pays before its own per-record logic.
  Rate: how fast the backlog shows up in the output topic (10 % → 90 %), so the job's start
  is left out; read_uncommitted, so that it is the copying that is timed, not the steps in
  which checkpoints make it visible.

    python bench/stream_ceilings.py --config <resolved flywheel.yaml> --mode sql|python
runs one identity job (the benchmark starts it; it runs until stopped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from stream_watch import Generator, Tail, drain_rate, follow  # noqa: E402


def broker_ceiling(bench, count: int) -> dict:
    from flywheel.kafka import Topics

    settings, config = bench.settings("ceil-broker")
    raw = Topics.from_settings(settings).raw
    tail = Tail(settings, [raw])
    try:
        gen = Generator(bench.children, "generator-broker", config, "broker", count, None, bench.args.seed)
        t0 = gen.wait_for("t0", 300)["t0"]
        series = follow(lambda: tail.counts()[raw], count, 600)
        done = gen.finish()
    finally:
        tail.close()
    return {
        "events": count,
        "events_per_s": count / (series[-1][0] - t0),
        "produce_events_per_s": count / done["confirmed_s"],
    }


def flink_identity(bench, mode: str, count: int) -> dict:
    from flywheel.kafka import Topics

    settings, config = bench.settings(f"ceil-{mode}")
    clean = Topics.from_settings(settings).clean
    name = f"identity-{mode}"
    gen = Generator(bench.children, f"generator-{mode}", config, name, count, None, bench.args.seed)
    gen.wait_for("t0", 300)
    gen.finish()
    tail = Tail(settings, [clean], isolation="read_uncommitted")
    bench.children.start(name, [sys.executable, __file__, "--config", str(config), "--mode", mode])
    try:
        series = follow(lambda: tail.counts()[clean], count, 600, lambda: bench.children.alive(name))
    finally:
        tail.close()
        bench.children.stop(name)
    rate, span = drain_rate(series, count)
    return {"events": count, "events_per_s": rate, "measured_s": span}


# ---- the identity job (a child process) ----------------------------------------------


def identity_job(config: str, mode: str) -> None:
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    from flywheel.kafka import Topics
    from flywheel.settings import load_settings
    from pipelines.stream_job import make_env, sink_ddl, source_ddl, table_env

    settings = load_settings(config)
    topics = Topics.from_settings(settings)
    env, _ = make_env(settings, restore=False)
    t_env = table_env(env, settings)
    t_env.execute_sql(source_ddl(settings, topics, None))
    t_env.execute_sql(sink_ddl(settings, "identity_sink", f"identity-{mode}", [topics.clean]))
    if mode == "sql":
        t_env.execute_sql("INSERT INTO identity_sink SELECT CAST(`v` AS STRING) FROM raw_feedback").wait()
        return
    identity = udf(lambda v: v.decode("utf-8", "replace"), result_type=DataTypes.STRING())
    t_env.create_temporary_function("identity_udf", identity)
    t_env.execute_sql("INSERT INTO identity_sink SELECT identity_udf(`v`) FROM raw_feedback").wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a PyFlink identity job (stream benchmark ceiling)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=("sql", "python"), required=True)
    args = parser.parse_args()
    identity_job(args.config, args.mode)
