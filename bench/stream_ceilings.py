"""Ceilings for the stream benchmark, measured in the same run as the pipeline:

- the broker alone: the generator floods a topic (confluent-kafka, the SDK's producer
  settings) while a consumer in the benchmark reads it (read_committed); events per second
  from the first send to the last record read;
- PyFlink identity jobs: a backlog in ``<prefix>.raw`` copied to ``<prefix>.clean`` by the
  stream job's own source (the Kafka table connector) and exactly-once sinks, with the
  same checkpointing, parallelism and jars (``pipelines.stream_job.make_env``):
  ``sql``: no Python at all (``INSERT INTO ... SELECT k, v``), the JVM's ceiling;
  ``python``: the source converted to a DataStream and one trivial Python map (bytes → str),
  the ceiling of the JVM ↔ Python hop the real job pays before its own per-record logic.
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


def sink_ddl(settings, topic: str) -> str:
    from flywheel.events import MAX_RECORD_BYTES
    from flywheel.kafka import java_kafka_properties
    from pipelines.stream_job import sql_string

    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.bootstrap_servers,
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"bench-identity-{settings.kafka.topic_prefix}",
        "properties.transaction.timeout.ms": "600000",
        "properties.max.request.size": str(MAX_RECORD_BYTES),
    }
    options.update({f"properties.{k}": v for k, v in java_kafka_properties(settings).items()})
    with_clause = ",\n  ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in options.items())
    return f"CREATE TEMPORARY TABLE identity_sink (`k` BYTES, `v` BYTES) WITH (\n  {with_clause}\n)"


def kafka_sink(settings, topic: str):
    """An exactly-once KafkaSink as the stream job builds its own."""
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    from flywheel.kafka import java_kafka_properties

    serializer = (
        KafkaRecordSerializationSchema.builder()
        .set_topic(topic)
        .set_value_serialization_schema(SimpleStringSchema())
        .build()
    )
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.bootstrap_servers)
        .set_record_serializer(serializer)
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"bench-identity-{settings.kafka.topic_prefix}")
        .set_property("transaction.timeout.ms", "600000")
    )
    for key, value in java_kafka_properties(settings).items():
        builder = builder.set_property(key, value)
    return builder.build()


def identity_job(config: str, mode: str) -> None:
    from pyflink.common import Types
    from pyflink.table import StreamTableEnvironment

    from flywheel.kafka import Topics
    from flywheel.settings import load_settings
    from pipelines.stream_job import make_env, source_ddl

    settings = load_settings(config)
    topics = Topics.from_settings(settings)
    env, _ = make_env(settings, restore=False)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(settings, topics, None))
    if mode == "sql":
        t_env.execute_sql(sink_ddl(settings, topics.clean))
        t_env.execute_sql("INSERT INTO identity_sink SELECT k, v FROM raw_feedback").wait()
        return
    rows = t_env.to_data_stream(t_env.from_path("raw_feedback"))
    text = rows.map(lambda row: row[1].decode("utf-8", "replace"), Types.STRING()).name("identity")
    text.sink_to(kafka_sink(settings, topics.clean)).name("to-clean")
    env.execute(f"bench-identity-{settings.kafka.topic_prefix}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a PyFlink identity job (stream benchmark ceiling)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--mode", choices=("sql", "python"), required=True)
    args = parser.parse_args()
    identity_job(args.config, args.mode)
