"""The PyFlink clean/route job. It only wires the functions of ``pipelines.records``.

All Table API / SQL: the Kafka table source (raw bytes + partition/offset metadata), one
Python scalar UDF per record (``transform.route_raw``: parse, validate once, normalise,
mask, route, serialise; PyFlink thread mode, so Python runs inside the JVM), dedupe as a
SQL over-window count per ``event_id`` (Java state in RocksDB, TTL'd), and one
exactly-once Kafka sink for the four outputs (one transaction per checkpoint). See
``build`` for the graph and docs/guide/stream.md for the knobs.

Runs embedded (a local MiniCluster in this process) through ``flywheel stream run``, or on
a standalone Flink cluster through ``flywheel stream submit`` (``flink run -py`` of this file
with ``--submit``; see ``pipelines.flink_cluster``). Unbounded by default;
``--stop-offsets 0:120,1:98`` bounds it to explicit end offsets per partition of
``<prefix>.raw`` (tests and backfills; never "latest").
"""

from __future__ import annotations

import argparse
import os
import shutil
import site
import sys
import threading
from pathlib import Path

from flywheel.broker import current_epoch, free_port, read_epoch
from flywheel.errors import FlywheelError
from flywheel.events import MAX_RECORD_BYTES
from flywheel.kafka import Topics, group_id, java_kafka_properties
from flywheel.layout import StateLayout
from flywheel.privacy import subject_key
from flywheel.settings import Settings, load_settings
from pipelines import job_health, jvm_tmp
from pipelines.job_health import report_python_step
from pipelines.records import DLQ, REVIEW
from pipelines.transform import route_raw

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
        "properties.group.id": group_id(settings, settings.stream.group_id),
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "group-offsets",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    # tansu (0.6, measured) answers a fetch only after fetch.max.wait.ms, even when data is ready
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
        "  `partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL,\n"
        "  `proc` AS PROCTIME()\n"
        f") WITH (\n  {with_clause}\n)"
    )


def sink_ddl(settings: Settings, table: str, name: str, topics: list[str]) -> str:
    """An exactly-once Kafka table sink (transactions committed on checkpoints) of a STRING
    column ``v``, to the one topic of ``topics`` or, given several, to the one each row names
    in its ``topic`` column: the job writes its four outputs through one such sink, so a
    checkpoint commits one transaction, not four (each costs tansu more than its records)."""
    stream = settings.stream
    options = {
        "connector": "kafka",
        "topic": ";".join(topics),
        "properties.bootstrap.servers": settings.bootstrap_servers,
        "value.format": "raw",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{stream.group_id}-{settings.kafka.topic_prefix}-{name}",
        # Each subtask writes one partition of each topic (subtask i → partition i mod n). With
        # the sticky partitioner, tansu left a quiet topic's last transaction pending for good
        # (its commit marker landed after the next transaction's first record there, and no
        # later commit on that partition swept it; measured with tansu 0.6).
        "sink.partitioner": "fixed",
        "properties.transaction.timeout.ms": "600000",
        "properties.max.request.size": str(MAX_RECORD_BYTES),
        # Records wait for their checkpoint's commit anyway: lingering as long sends most of
        # them at the checkpoint's flush, in few large batches, after the previous commit.
        "properties.linger.ms": str(stream.sink_linger_ms or stream.checkpoint_interval_ms),
        "properties.batch.size": str(stream.sink_batch_bytes),
    }
    options.update({f"properties.{k}": v for k, v in java_kafka_properties(settings).items()})
    with_clause = ",\n  ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in options.items())
    columns = "`v` STRING" if len(topics) == 1 else "`topic` STRING METADATA, `v` STRING"
    return f"CREATE TEMPORARY TABLE {table} ({columns}) WITH (\n  {with_clause}\n)"


def route_function(settings: Settings, raw_topic: str):
    """The job's one Python step: a scalar UDF around ``transform.route_raw`` (parse, validate
    once, normalise, mask, route, serialise), returning (destination, event_id, record,
    duplicate record)."""
    from pyflink.common import Row
    from pyflink.table import DataTypes
    from pyflink.table.udf import ScalarFunction, udf

    thresholds = dict(settings.stream.review_threshold_per_model)
    default_threshold = settings.stream.review_threshold
    max_dlq_raw = settings.stream.dlq_max_raw_bytes
    report_to = str(StateLayout.of(settings).stream_python_step)
    subject = subject_key(settings)  # subject ids are pseudonymised before any topic past raw holds them

    class Route(ScalarFunction):
        def open(self, function_context) -> None:
            report_python_step(report_to)  # thread mode is checked, not assumed

        def eval(self, key, value, partition, offset):
            return Row(
                *route_raw(
                    value,
                    key,
                    raw_topic,
                    partition,
                    offset,
                    thresholds,
                    default_threshold,
                    max_dlq_raw,
                    subject,
                )
            )

    fields = [
        DataTypes.FIELD(n, DataTypes.STRING()) for n in ("destination", "event_id", "record", "duplicate")
    ]
    return udf(Route(), result_type=DataTypes.ROW(fields), deterministic=True)


def build(t_env, settings: Settings, stop_offsets: dict[int, int] | None = None):
    """Add the clean/route graph to a StreamTableEnvironment; returns the StatementSet.

    raw ─ route (Python, one call per record) ─┬─ dlq ───────────────────────────► <prefix>.dlq
                                               └─ COUNT(*) OVER (PARTITION BY event_id)
                                                   1: review | clean ► <prefix>.review | .clean
                                                  >1: duplicate record ► <prefix>.duplicates

    All four through one exactly-once sink (``sink_ddl``), the topic named per row.

    Deduplication is a Flink SQL over-window count per ``event_id`` (Java keyed state with
    ``table.exec.state.ttl`` = ``stream.dedupe_ttl_hours``), not Python state.
    """
    topics = Topics.from_settings(settings)
    t_env.execute_sql(source_ddl(settings, topics, stop_offsets))
    t_env.create_temporary_function("route_raw", route_function(settings, topics.raw))
    outputs = [topics.clean, topics.review, topics.dlq, topics.duplicates]
    t_env.execute_sql(sink_ddl(settings, "outputs", "out", outputs))
    t_env.execute_sql(
        "CREATE TEMPORARY VIEW routed AS SELECT r.destination AS destination, r.event_id AS event_id, "
        "r.record AS record, r.duplicate AS duplicate, proc FROM "
        "(SELECT route_raw(`k`, `v`, `partition`, `offset`) AS r, proc FROM raw_feedback)"
    )
    t_env.execute_sql(
        "CREATE TEMPORARY VIEW counted AS SELECT destination, record, duplicate, COUNT(*) OVER ("
        "PARTITION BY event_id ORDER BY proc ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS seen "
        f"FROM routed WHERE destination <> '{DLQ}'"
    )
    statements = t_env.create_statement_set()
    dlq, dup, review, clean = (
        sql_string(t) for t in (topics.dlq, topics.duplicates, topics.review, topics.clean)
    )
    statements.add_insert_sql(
        f"INSERT INTO outputs SELECT {dlq}, record FROM routed WHERE destination = '{DLQ}' UNION ALL "
        f"SELECT CASE WHEN seen > 1 THEN {dup} WHEN destination = '{REVIEW}' THEN {review} ELSE {clean} END, "
        "CASE WHEN seen > 1 THEN duplicate ELSE record END FROM counted"
    )
    return statements


def job_name(settings: Settings) -> str:
    """The job's name in Flink (its REST API and UI list it by this name)."""
    return f"flywheel-stream-{settings.kafka.topic_prefix}"


def venv_python_path() -> list[str]:
    """What PyFlink's embedded interpreter (thread mode) must have on ``PYTHONPATH`` to import
    what this one can: it does not see a venv's packages (``No module named 'pemja'``)."""

    return [*site.getsitepackages(), str(ROOT)]


def embedded_python_path() -> None:
    """``venv_python_path`` added to this process's ``PYTHONPATH`` (the local JVM inherits it)."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*current, *venv_python_path()]))


def make_env(settings: Settings, restore: bool = True, rest_port: int | None = None):
    """A StreamExecutionEnvironment with checkpointing, retained checkpoints, the jars, a
    bounded exponential-delay restart strategy and (``rest_port``) the REST API on loopback."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    stream = settings.stream
    layout = StateLayout.of(settings)
    os.environ.setdefault("FLINK_LOG_DIR", str(layout.flink_logs))
    tmp = jvm_tmp.claim(layout.flink_tmp)  # not /tmp: what Flink leaves there is never removed
    os.environ["JVM_ARGS"] = jvm_tmp.java_tmpdir_args(tmp)  # read when the JVM starts, below
    if stream.execution_mode == "thread":
        embedded_python_path()  # before the JVM starts: it inherits the environment
    folder = checkpoint_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    same_epoch = _checkpoints_of_this_epoch(settings, folder)
    conf = Configuration()
    options = {
        "execution.checkpointing.interval": f"{stream.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": folder.as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "execution.checkpointing.min-pause": f"{stream.checkpoint_interval_ms // 2} ms",
        "io.tmp.dirs": str(tmp),
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": "true",
        "python.execution-mode": stream.execution_mode,
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
    resume = latest_checkpoint(folder) if restore and same_epoch else None
    if resume is not None:
        conf.set_string("execution.state-recovery.path", resume.as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    return env, resume


def _checkpoints_of_this_epoch(settings: Settings, folder: Path) -> bool:
    """True when the retained checkpoints belong to the embedded broker's current epoch.

    A checkpoint holds source offsets and the dedupe state of a broker that may have come
    back empty (``flywheel.broker``). Restoring it would seek past the new topics' ends and
    call re-delivered events duplicates of outputs that were lost with the old broker; so
    the checkpoints of an earlier epoch are removed and the job starts afresh, and the
    settler re-delivers from the edge journal everything that had no recorded fate.
    """

    if not settings.embedded_broker:
        return True
    epoch = read_epoch(settings.state_dir)
    if epoch is None:
        return True
    marker = folder / "broker-epoch"
    try:
        seen = marker.read_text().strip()
    except FileNotFoundError:
        seen = None
    if seen == epoch.id:
        return True
    for child in folder.iterdir():
        if child.name != "broker-epoch":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    marker.write_text(epoch.id + "\n")
    return seen is None  # a folder from before epochs were kept: nothing was removed that mattered


def watch_epoch(settings: Settings, on_change, stop: threading.Event, every_s: float = 1.0) -> None:
    """Call ``on_change(old, new)`` once if the embedded broker's epoch changes while the job runs."""

    def current():
        epoch = current_epoch(settings)
        return epoch.id if epoch is not None else None

    start = current()
    while not stop.wait(every_s):
        now = current()
        if now is not None and now != start:
            on_change(start, now)
            return


def table_env(env, settings: Settings):
    """The StreamTableEnvironment the job is built in (dedupe state TTL set)."""
    from pyflink.table import StreamTableEnvironment

    t_env = StreamTableEnvironment.create(env)
    ttl_ms = int(settings.stream.dedupe_ttl_hours * 3600 * 1000)
    t_env.get_config().set("table.exec.state.ttl", f"{ttl_ms} ms")
    return t_env


class JobFailed(FlywheelError):
    """The stream job failed for good (its restarts were used up)."""


class BrokerRestarted(FlywheelError):
    """The embedded broker came back empty under the running job: it must start afresh."""

    exit_code = 75


def run(
    settings: Settings, stop_offsets: dict[int, int] | None = None, restore: bool = True, log=print
) -> None:
    """Build and execute the job; blocks (forever unless bounded by stop offsets).

    While it runs, a monitor thread writes the job's state, restart count and last
    exception to ``<state_dir>/run/stream-job.json`` (see ``pipelines.job_health``).
    """

    rest_port = free_port()
    env, resume = make_env(settings, restore, rest_port)
    log(
        f"stream job: {Topics.from_settings(settings).raw} -> clean/review/dlq/duplicates; "
        f"{'resuming from ' + str(resume) if resume else 'starting from committed offsets'}"
        f"{'; bounded to ' + str(stop_offsets) if stop_offsets is not None else ''}"
    )
    t_env = table_env(env, settings)
    t_env.get_config().set("pipeline.name", job_name(settings))
    client = build(t_env, settings, stop_offsets).execute().get_job_client()
    result = client.get_job_execution_result()  # take it before the MiniCluster can go away
    monitor = job_health.JobMonitor(
        settings.state_dir, f"http://127.0.0.1:{rest_port}", str(client.get_job_id())
    )
    monitor.start()
    watching = threading.Event()
    moved: list[str] = []
    if settings.embedded_broker:

        def epoch_changed(old, new) -> None:
            moved.append(new)
            log("stream job: the embedded broker restarted (new epoch); cancelling, to start afresh")
            client.cancel()

        threading.Thread(
            target=watch_epoch, args=(settings, epoch_changed, watching), daemon=True, name="epoch-watch"
        ).start()
    try:
        result.result()
    except Exception as exc:
        if moved:
            monitor.finish("CANCELED", "broker epoch changed")
            raise BrokerRestarted(
                "the embedded broker restarted empty while the job ran; start the job again: it "
                "starts afresh and the settler re-delivers what had no fate (`flywheel run` does both)"
            ) from exc
        summary = job_health.summarise_exception(type(exc).__name__, str(exc))
        monitor.finish("FAILED", summary, failure=str(exc))
        raise JobFailed(
            f"the stream job failed after {monitor.health.restarts} restarts: {summary}. "
            f"Flink's log is under {os.environ.get('FLINK_LOG_DIR')}; fix the cause and start it again "
            "(it resumes from the last checkpoint)"
        ) from exc
    finally:
        watching.set()
    monitor.finish("FINISHED")


def submit(settings: Settings, log=print) -> str:
    """Build the job and submit it to the cluster this program was started for (``flink run
    -py``, see ``pipelines.flink_cluster``); return its job id without waiting for it. The
    cluster restores it from a savepoint given to ``flink run -s``."""
    env, _ = make_env(settings, restore=False)
    t_env = table_env(env, settings)
    t_env.get_config().set("pipeline.name", job_name(settings))
    job_id = str(build(t_env, settings, None).execute().get_job_client().get_job_id())
    log(f"stream job submitted: JobID {job_id}")
    return job_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="flywheel.yaml (default: $FLYWHEEL_CONFIG or ./flywheel.yaml)")
    parser.add_argument("--stop-offsets", help="bound the job: 'partition:offset,...' of the raw topic")
    parser.add_argument("--no-restore", action="store_true", help="ignore retained checkpoints")
    parser.add_argument(
        "--submit", action="store_true", help="submit to a cluster (flink run -py) and return"
    )
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    if args.submit:
        submit(settings)
        return
    stops = parse_stop_offsets(args.stop_offsets) if args.stop_offsets else None
    run(settings, stops, restore=not args.no_restore)


if __name__ == "__main__":
    main()
