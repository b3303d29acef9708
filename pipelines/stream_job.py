"""The PyFlink clean/route job. It only wires the functions of ``pipelines.records``.

Source: the Kafka table connector (raw bytes + partition/offset metadata, which the
DataStream KafkaSource of PyFlink cannot expose), converted to a DataStream.
Then: validate → (dlq | keyBy(event_id) → dedupe with TTL'd keyed state → route),
written by four exactly-once Kafka sinks (transactions committed on checkpoints).

Runs embedded (a local MiniCluster in this process) through ``flywheel stream run``,
or on a Flink cluster as a standalone module::

    flink run -py pipelines/stream_job.py --pyFiles flywheel,pipelines \\
        --jarfile .jars/flink-connector-kafka.jar -- --config flywheel.yaml

(add ``.jars/kafka-clients.jar`` to the cluster's lib/ or via ``pipeline.jars``).
Unbounded by default; ``--stop-offsets 0:120,1:98`` bounds it to explicit end
offsets per partition of ``<prefix>.raw`` (tests and backfills; never "latest").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.events import MAX_RECORD_BYTES
from flywheel.kafka import Topics, java_kafka_properties
from flywheel.layout import StateLayout
from flywheel.settings import Settings, load_settings
from pipelines.records import DLQ, REVIEW, DuplicateRecord, Origin, process_raw

JAR_NAMES = ("flink-connector-kafka.jar", "kafka-clients.jar")
ROOT = Path(__file__).resolve().parents[1]


def jar_urls() -> list[str]:
    """file:// URLs of the Kafka connector jars (``$FLYWHEEL_JARS_DIR`` or ./.jars)."""
    folder = Path(os.environ.get("FLYWHEEL_JARS_DIR", ROOT / ".jars"))
    missing = [n for n in JAR_NAMES if not (folder / n).is_file()]
    if missing:
        raise FlywheelError(f"Flink Kafka jars missing in {folder}: {', '.join(missing)}; run `make setup`")
    return [(folder / n).resolve().as_uri() for n in JAR_NAMES]


def checkpoint_dir(settings: Settings) -> Path:
    return StateLayout.of(settings).flink_checkpoints


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete retained checkpoint (a chk-N dir with _metadata), if any."""
    found = [p.parent for p in folder.glob("*/chk-*/_metadata")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def parse_stop_offsets(text: str) -> dict[int, int]:
    """'0:120,1:98' → {0: 120, 1: 98}."""
    try:
        pairs = [part.split(":") for part in text.split(",") if part.strip()]
        return {int(p): int(o) for p, o in pairs}
    except ValueError as exc:
        raise FlywheelError(
            f"--stop-offsets {text!r} must look like '0:120,1:98' (partition:offset)"
        ) from exc


def sql_string(value: str) -> str:
    """A Flink SQL string literal (single quotes doubled), safe for any property value."""
    return "'" + str(value).replace("'", "''") + "'"


def source_ddl(settings: Settings, topics: Topics, stop_offsets: dict[int, int] | None) -> str:
    options = {
        "connector": "kafka",
        "topic": topics.raw,
        "properties.bootstrap.servers": settings.bootstrap_servers,
        "properties.group.id": settings.stream.group_id,
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "group-offsets",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    # tansu answers a fetch only after fetch.max.wait.ms, even when data is ready (DESIGN.md)
    options["properties.fetch.max.wait.ms"] = str(settings.kafka.fetch_wait_ms)
    options.update({f"properties.{k}": v for k, v in java_kafka_properties(settings).items()})
    if stop_offsets is not None:
        options["scan.bounded.mode"] = "specific-offsets"
        options["scan.bounded.specific-offsets"] = ";".join(
            f"partition:{p},offset:{o}" for p, o in sorted(stop_offsets.items())
        )
    with_clause = ",\n  ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in options.items())
    return (
        "CREATE TEMPORARY TABLE raw_feedback (\n"
        "  `k` BYTES, `v` BYTES,\n"
        "  `partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL\n"
        f") WITH (\n  {with_clause}\n)"
    )


def build(env, settings: Settings, stop_offsets: dict[int, int] | None = None) -> None:
    """Add the clean/route graph to a StreamExecutionEnvironment."""
    from pyflink.common import Types
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.common.time import Time
    from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
    from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
    from pyflink.table import StreamTableEnvironment

    topics = Topics.from_settings(settings)
    dlq_tag = OutputTag("dlq", Types.STRING())
    review_tag = OutputTag("review", Types.STRING())
    dup_tag = OutputTag("duplicates", Types.STRING())
    thresholds = dict(settings.stream.review_threshold_per_model)
    default_threshold = settings.stream.review_threshold
    ttl_ms = int(settings.stream.dedupe_ttl_hours * 3600 * 1000)
    raw_topic = topics.raw

    max_dlq_raw = settings.stream.dlq_max_raw_bytes

    class Validate(ProcessFunction):
        """Parse, validate, clean and route each raw record once (never raises)."""

        def process_element(self, row, ctx):
            origin = Origin(raw_topic, row[2], row[3])
            out = process_raw(row[1], row[0], origin, thresholds, default_threshold, max_dlq_raw)
            if out.destination == DLQ:
                yield dlq_tag, out.record
            else:
                yield out.event_id, out.destination, out.record, origin.partition, origin.offset

    class Dedupe(KeyedProcessFunction):
        """First sighting of an event_id goes on to review/clean; later ones to duplicates."""

        def open(self, runtime_context):
            descriptor = ValueStateDescriptor("seen", Types.BOOLEAN())
            descriptor.enable_time_to_live(StateTtlConfig.new_builder(Time.milliseconds(ttl_ms)).build())
            self.seen = runtime_context.get_state(descriptor)

        def process_element(self, value, ctx):
            event_id, destination, record, partition, offset = value
            if self.seen.value():
                yield dup_tag, DuplicateRecord(event_id, Origin(raw_topic, partition, offset)).to_json()
                return
            self.seen.update(True)
            if destination == REVIEW:
                yield review_tag, record
            else:
                yield record

    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(settings, topics, stop_offsets))
    raw = t_env.to_data_stream(t_env.from_path("raw_feedback"))
    routed_type = Types.TUPLE([Types.STRING(), Types.STRING(), Types.STRING(), Types.INT(), Types.LONG()])
    valid = raw.process(Validate(), routed_type).name("validate-route")
    clean = (
        valid.key_by(lambda v: v[0], key_type=Types.STRING()).process(Dedupe(), Types.STRING()).name("dedupe")
    )

    def sink(topic: str, name: str):
        builder = (
            KafkaSink.builder()
            .set_bootstrap_servers(settings.bootstrap_servers)
            .set_record_serializer(
                KafkaRecordSerializationSchema.builder()
                .set_topic(topic)
                .set_value_serialization_schema(SimpleStringSchema())
                .build()
            )
            .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(f"{settings.stream.group_id}-{settings.kafka.topic_prefix}-{name}")
            .set_property("transaction.timeout.ms", "600000")
            .set_property("max.request.size", str(MAX_RECORD_BYTES))
        )
        for key, value in java_kafka_properties(settings).items():
            builder = builder.set_property(key, value)
        return builder.build()

    clean.sink_to(sink(topics.clean, "clean")).name("to-clean")
    clean.get_side_output(review_tag).sink_to(sink(topics.review, "review")).name("to-review")
    clean.get_side_output(dup_tag).sink_to(sink(topics.duplicates, "duplicates")).name("to-duplicates")
    # Not chained into the source's task like the other sinks are not: chained there, the DLQ's
    # last transaction was left open (uncommitted) on one partition in 2 of 3 bounded runs.
    valid.get_side_output(dlq_tag).sink_to(sink(topics.dlq, "dlq")).name("to-dlq").disable_chaining()


def make_env(settings: Settings, restore: bool = True, rest_port: int | None = None):
    """A StreamExecutionEnvironment with checkpointing, retained checkpoints, the jars, a
    bounded exponential-delay restart strategy and (``rest_port``) the REST API on loopback."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    os.environ.setdefault("FLINK_LOG_DIR", str(StateLayout.of(settings).flink_logs))
    folder = checkpoint_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stream = settings.stream
    conf = Configuration()
    options = {
        "execution.checkpointing.interval": f"{stream.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": folder.as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "pipeline.jars": ";".join(jar_urls()),
        "parallelism.default": str(stream.parallelism),
        "python.executable": os.environ.get("PYFLINK_PYTHON", sys.executable),
        # A failing job is restarted with growing delays, then fails for good (and says why)
        # instead of looping forever on the same record or a dead sink.
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": f"{stream.restart_backoff_initial_ms} ms",
        "restart-strategy.exponential-delay.max-backoff": f"{stream.restart_backoff_max_ms} ms",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.jitter-factor": "0.1",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "1 h",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(stream.restart_attempts),
    }
    if rest_port is not None:
        options.update(
            {
                "rest.address": "127.0.0.1",
                "rest.bind-address": "127.0.0.1",
                "rest.port": str(rest_port),
                "web.refresh-interval": "1000 ms",
                "metrics.fetcher.update-interval": "1000 ms",
            }
        )
    for key, value in options.items():
        conf.set_string(key, value)
    resume = latest_checkpoint(folder) if restore else None
    if resume is not None:
        conf.set_string("execution.state-recovery.path", resume.as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    return env, resume


class JobFailed(FlywheelError):
    """The stream job failed for good (its restarts were used up)."""


def run(
    settings: Settings, stop_offsets: dict[int, int] | None = None, restore: bool = True, log=print
) -> None:
    """Build and execute the job; blocks (forever unless bounded by stop offsets).

    While it runs, a monitor thread writes the job's state, restart count and last
    exception to ``<state_dir>/run/stream-job.json`` (see ``pipelines.job_health``).
    """
    from flywheel.broker import free_port
    from pipelines import job_health

    rest_port = free_port()
    env, resume = make_env(settings, restore, rest_port)
    log(
        f"stream job: {Topics.from_settings(settings).raw} -> clean/review/dlq/duplicates; "
        f"{'resuming from ' + str(resume) if resume else 'starting from committed offsets'}"
        f"{'; bounded to ' + str(stop_offsets) if stop_offsets is not None else ''}"
    )
    build(env, settings, stop_offsets)
    client = env.execute_async(f"flywheel-stream-{settings.kafka.topic_prefix}")
    result = client.get_job_execution_result()  # take it before the MiniCluster can go away
    monitor = job_health.JobMonitor(
        settings.state_dir, f"http://127.0.0.1:{rest_port}", str(client.get_job_id())
    )
    monitor.start()
    try:
        result.result()
    except Exception as exc:
        summary = job_health.summarise_exception(type(exc).__name__, str(exc))
        monitor.finish("FAILED", summary)
        raise JobFailed(
            f"the stream job failed after {monitor.health.restarts} restarts: {summary}. "
            f"Flink's log is under {os.environ.get('FLINK_LOG_DIR')}; fix the cause and start it again "
            "(it resumes from the last checkpoint)"
        ) from exc
    monitor.finish("FINISHED")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="flywheel.yaml (default: $FLYWHEEL_CONFIG or ./flywheel.yaml)")
    parser.add_argument("--stop-offsets", help="bound the job: 'partition:offset,...' of the raw topic")
    parser.add_argument("--no-restore", action="store_true", help="ignore retained checkpoints")
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    stops = parse_stop_offsets(args.stop_offsets) if args.stop_offsets else None
    run(settings, stops, restore=not args.no_restore)


if __name__ == "__main__":
    main()
