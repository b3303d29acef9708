"""CLI commands of the stream stage, registered on the root ``flywheel`` app."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flywheel.cli import console, err_console, settings_of, sub_app
from flywheel.errors import BrokerError
from flywheel.layout import StateLayout
from flywheel.lazy import lazy_import

if TYPE_CHECKING:
    from flywheel.settings import Settings

_store = lazy_import("feature_repo.store")
flink_cluster = lazy_import("pipelines.flink_cluster")
_ingest = lazy_import("pipelines.ingest")
_review = lazy_import("pipelines.review")
_review_queue = lazy_import("pipelines.review_queue")
_review_sync = lazy_import("pipelines.review_sync")
_sdk = lazy_import("pipelines.sdk")
_settler = lazy_import("pipelines.settler")
_stats = lazy_import("pipelines.stats")
_stream_job = lazy_import("pipelines.stream_job")
_submit = lazy_import("pipelines.submit")

# Exit codes of `flywheel submit`
SUBMIT_OK, SUBMIT_REJECTED, SUBMIT_FAILED = 0, 1, 4


def submit(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="JSONL file of feedback events, or - for stdin")],
    show: Annotated[int, typer.Option(help="how many bad lines to list")] = 20,
    raw: Annotated[
        bool,
        typer.Option(
            help="send lines unvalidated (replay captured traffic; the stream job's DLQ "
            "records what is wrong with them)"
        ),
    ] = False,
) -> None:
    """Validate and send a JSONL file of feedback events to Kafka.

    Exit code 0: all sent; 1: some lines rejected (the valid ones were sent);
    4: Kafka did not confirm some events (resubmitting is safe).
    """

    if file != "-" and not Path(file).is_file():
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    settings = settings_of(ctx)
    total = _submit.count_lines(file)
    with (
        _sdk.FeedbackClient(settings) as client,
        Progress(
            TextColumn("submitting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("submit", total=total)
        report = _submit.submit_file(client, file, on_progress=lambda n: progress.advance(task, n), raw=raw)
    rate = report.sent / report.seconds if report.seconds else 0.0
    console.print(
        f"sent {report.sent}, rejected {len(report.rejected)}, failed {len(report.failed)} "
        f"in {report.seconds:.2f}s ({rate:,.0f} events/s) to {client.topic}"
    )
    for problem in (report.rejected + report.failed)[:show]:
        console.print(
            f"  line {problem.line}: {problem.reason}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    hidden = len(report.rejected) + len(report.failed) - show
    if hidden > 0:
        console.print(f"  ... and {hidden} more")
    if report.failed:
        raise typer.Exit(SUBMIT_FAILED)
    if report.rejected:
        raise typer.Exit(SUBMIT_REJECTED)


def ingest(
    ctx: typer.Context,
    until_caught_up: Annotated[
        bool, typer.Option(help="stop once every partition of the clean topic is consumed")
    ] = False,
) -> None:
    """Consume the clean topic into Feast (online push + append-only offline files).

    Offsets are committed after each micro-batch is written; Ctrl-C stops cleanly.
    """

    settings = settings_of(ctx)
    ingestor = _ingest.Ingestor(settings, log=err_console.print)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: ingestor.stop())
    err_console.print(f"ingesting {ingestor.topic} into Feast ({settings.state_dir}/feast)")

    def progress(stats) -> None:
        err_console.print(
            f"  batch {stats.batches}: {stats.rows:,} rows in total, {stats.rate:,.0f} rows/s",
            highlight=False,
        )

    stats = ingestor.run(until_caught_up=until_caught_up, progress=progress)
    console.print(f"ingested {stats.rows:,} rows in {stats.batches} batches ({stats.retries} retries)")


def features_apply(ctx: typer.Context) -> None:
    """Register the entity, push source, feature view and feature service (idempotent)."""

    settings = settings_of(ctx)
    names = _store.apply_definitions(settings)
    console.print(f"applied {', '.join(names)} to {_store.feast_dir(settings)}")


def _synced_queue(settings: Settings, client=None):
    """The review queue, in step with the review topic and with due answers sent (when the
    broker answers; else what the queue holds, with a warning)."""

    queue = _review_queue.ReviewQueue(settings)
    try:
        if client is not None:
            _review.sync_and_send(queue, client)
        else:
            _review_sync.sync(queue, timeout_s=20)
    except BrokerError as exc:
        err_console.print(f"[yellow]the broker did not answer ({exc}); showing the stored queue[/yellow]")
    return queue


def review_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="how many to show")] = 20,
    model: Annotated[str | None, typer.Option(help="only this model")] = None,
) -> None:
    """Items waiting for a label, the most uncertain first (what the /review page shows)."""

    queue = _synced_queue(settings_of(ctx))
    table = Table("event_id", "model", "prediction", "confidence", "answers", "text", title="review queue")
    for item in queue.pending(model, limit):
        record = item.record
        table.add_row(
            item.event_id,
            item.model_name,
            str(record.prediction_label or "<image>"),
            "-" if record.confidence is None else f"{record.confidence:.2f}",
            f"{item.votes}/{queue.required}",
            (record.text or "<image>")[:80],
        )
    console.print(table)


def review_label(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="the reviewed event")],
    label: Annotated[
        str, typer.Argument(help="your answer: one of the model's labels (images: accept, reject)")
    ],
    reviewer: Annotated[str, typer.Option(help="who you are: one of review.reviewers when configured")],
) -> None:
    """Answer a review item. Once review.required_reviews reviewers agree, the answer goes back
    into the loop as feedback (`label_source=review`, `source=review:<reviewers>`)."""

    settings = settings_of(ctx)
    with _sdk.FeedbackClient(settings) as client:
        queue = _synced_queue(settings, client)
        item = queue.get(event_id)
        verdict = _review.answer(settings, queue, item.model_name, event_id, reviewer, label)
        sent = _review.send_due(queue, client)
    said = {
        "pending": f"recorded; {verdict.required - verdict.votes} more reviewer(s) must answer",
        "agreed": f"agreed: {verdict.answer}" + (" (sent into the loop)" if sent else ""),
        "escalated": "the reviewers disagree: escalated to a lead (`flywheel review escalated`)",
    }[verdict.status]
    console.print(f"{event_id}: {label} by {reviewer}: {said}")


def review_stats(
    ctx: typer.Context, model: Annotated[str, typer.Argument(help="the model whose queue to show")]
) -> None:
    """The queue's figures and each reviewer's agreement rate."""

    stats = _synced_queue(settings_of(ctx)).stats(model)
    console.print(
        f"{model}: {stats.pending} pending, {stats.agreed} agreed ({stats.sent} in the loop), "
        f"{stats.escalated} escalated, {stats.unsendable} refused by the loop; "
        f"{stats.required_reviews} reviewer(s) must agree"
    )
    table = Table("reviewer", "answers", "decided with others", "agreed", "agreement", title="reviewers")
    for r in stats.reviewers:
        rate = "-" if r.agreement is None else f"{r.agreement:.0%}"
        table.add_row(r.reviewer, str(r.labels), str(r.decided), str(r.agreed), rate)
    console.print(table)


def review_escalated(
    ctx: typer.Context, model: Annotated[str, typer.Argument(help="the model whose escalated items to show")]
) -> None:
    """Items whose reviewers disagreed; a lead settles one with `flywheel review label`."""

    table = Table("event_id", "answers", "text", title="escalated")
    for item, answers in _synced_queue(settings_of(ctx)).escalated(model):
        shown = ", ".join(f"{who}: {a}" for who, a in answers.items())
        table.add_row(item.event_id, shown, (item.record.text or "<image>")[:80])
    console.print(table)


def review_sync(ctx: typer.Context) -> None:
    """Move new review-topic items into the queue and send agreed answers (the HTTP app does
    this every review.sync_interval_s; run it from cron when no app runs)."""

    settings = settings_of(ctx)
    with _sdk.FeedbackClient(settings) as client:
        added, sent = _review.sync_and_send(_review_queue.ReviewQueue(settings), client, timeout_s=30)
    console.print(f"review queue: {added} new item(s), {sent} agreed answer(s) sent")


def stream_run(
    ctx: typer.Context,
    stop_offsets: Annotated[str | None, typer.Option(help="bound the job: 'partition:offset,...'")] = None,
    no_restore: Annotated[bool, typer.Option(help="ignore retained checkpoints")] = False,
) -> None:
    """Run the clean/route job on a local MiniCluster (unbounded unless --stop-offsets)."""

    stops = _stream_job.parse_stop_offsets(stop_offsets) if stop_offsets else None
    _stream_job.run(settings_of(ctx), stops, restore=not no_restore, log=err_console.print)


def stream_stats(ctx: typer.Context) -> None:
    """Count every topic and check raw = clean + review + dlq + duplicates (exit 1 if not).

    Output topics are counted by distinct source record (partition, offset).
    """

    a = _stats.accounting(settings_of(ctx))
    table = Table("topic", "events", title="event accounting")
    for name in ("raw", "clean", "review", "dlq", "duplicates"):
        table.add_row(name, f"{getattr(a, name):,}")
    console.print(table)
    if a.redelivered:
        console.print(
            f"{a.redelivered:,} output records were delivered twice after a restart and are "
            "counted once (see pipelines/stats.py)"
        )

    state = _settler.durability(settings_of(ctx))
    for line in state.lines():
        console.print(line)
    if a.balanced:
        fresh = state.epoch is not None and state.epoch > 1
        console.print(
            f"balanced: raw {a.raw:,} = clean + review + dlq + duplicates {a.accounted:,}"
            + (
                f" (topics of broker epoch {state.epoch} only: earlier ones are in the fates above)"
                if fresh
                else ""
            )
        )
        return
    console.print(
        f"NOT balanced: raw {a.raw:,} vs accounted {a.accounted:,} ({a.in_flight:+,} "
        "in flight: is `flywheel stream run` running and caught up?)"
    )
    raise typer.Exit(1)


def cluster_start(
    ctx: typer.Context,
    taskmanagers: Annotated[int, typer.Option(min=1, help="TaskManagers to start")] = 1,
    slots: Annotated[int, typer.Option(min=1, help="task slots per TaskManager")] = 2,
) -> None:
    """Start a standalone Flink cluster on loopback from PyFlink's own scripts (under
    `<state_dir>/flink-cluster`)."""

    cluster = flink_cluster.start(settings_of(ctx), taskmanagers, slots)
    console.print(f"Flink cluster: {cluster.rest} ({taskmanagers} TaskManager(s) x {slots} slots)")


def cluster_stop(ctx: typer.Context) -> None:
    """Stop this state dir's Flink cluster (its jobs stop with it; stop them with a savepoint first)."""

    flink_cluster.stop(settings_of(ctx))
    console.print("Flink cluster stopped")


def cluster_add_taskmanager(ctx: typer.Context) -> None:
    """Start one more TaskManager (e.g. to replace one that died)."""

    flink_cluster.add_taskmanager(settings_of(ctx))
    console.print("TaskManager started")


def cluster_status(ctx: typer.Context) -> None:
    """The cluster's address, TaskManagers, slots and jobs."""

    cluster = flink_cluster.read(settings_of(ctx))
    info = None if cluster is None else flink_cluster.overview(cluster)
    if info is None:
        console.print("no Flink cluster runs for this state dir (`flywheel stream cluster start`)")
        raise typer.Exit(1)
    console.print(
        f"{cluster.rest}: {info['taskmanagers']} TaskManager(s), {info['slots-available']} of "
        f"{info['slots-total']} slots free"
    )
    for job in flink_cluster.jobs(cluster):
        console.print(f"  {job['jid']} {job['name']}: {job['state']}")


def cluster_node(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="jobmanager or taskmanager")],
    address: Annotated[str, typer.Option(help="the JobManager's host name")] = "127.0.0.1",
    rest_port: Annotated[int, typer.Option(help="the JobManager's REST port")] = 8081,
    rpc_port: Annotated[int, typer.Option(help="the JobManager's RPC port")] = 6123,
    slots: Annotated[int, typer.Option(min=1, help="task slots (a TaskManager)")] = 2,
) -> None:
    """Run one node of a Flink cluster in the foreground (a container's process, e.g. in
    docker-compose.yml), configured like `cluster start` but listening on all interfaces."""

    flink_cluster.run_node(settings_of(ctx), role, address, rest_port, rpc_port, slots)


def stream_submit(
    ctx: typer.Context,
    from_savepoint: Annotated[str | None, typer.Option(help="resume from this savepoint")] = None,
    jobmanager: Annotated[
        str | None,
        typer.Option(help="host:port of a JobManager's REST API (default: this state dir's cluster)"),
    ] = None,
) -> None:
    """Submit the stream job to this state dir's Flink cluster (flink run -py; the connector jars
    and the Python code travel with the job); prints its job id."""

    settings = settings_of(ctx)
    config = StateLayout.of(settings).flink_cluster / "flywheel.resolved.yaml"
    settings.write_resolved(config)
    job_id = flink_cluster.submit(settings, config, savepoint=from_savepoint, rest_address=jobmanager)
    console.print(f"submitted: {job_id}")


def stream_stop(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="the job (see `flywheel stream cluster status`)")],
) -> None:
    """Stop a job on the cluster with a savepoint; prints the path to resubmit from
    (`flywheel stream submit --from-savepoint PATH`), e.g. to upgrade the job."""

    path = flink_cluster.stop_with_savepoint(settings_of(ctx), job_id)
    console.print(f"stopped with savepoint: {path}")


def register(app: typer.Typer) -> None:
    features_app = sub_app("The Feast feature repository.")
    review_app = sub_app("The human review queue.")
    stream_app = sub_app("The PyFlink clean/route job and its accounting.")
    app.add_typer(features_app, name="features")
    app.add_typer(review_app, name="review")
    app.add_typer(stream_app, name="stream")
    app.command("submit")(submit)
    app.command("ingest")(ingest)
    features_app.command("apply")(features_apply)
    review_app.command("list")(review_list)
    review_app.command("label")(review_label)
    review_app.command("stats")(review_stats)
    review_app.command("escalated")(review_escalated)
    review_app.command("sync")(review_sync)
    stream_app.command("run")(stream_run)
    stream_app.command("submit")(stream_submit)
    stream_app.command("stop")(stream_stop)
    cluster_app = sub_app("A standalone Flink cluster on loopback.")
    stream_app.add_typer(cluster_app, name="cluster")
    cluster_app.command("start")(cluster_start)
    cluster_app.command("stop")(cluster_stop)
    cluster_app.command("status")(cluster_status)
    cluster_app.command("add-taskmanager")(cluster_add_taskmanager)
    cluster_app.command("node")(cluster_node)
    stream_app.command("stats")(stream_stats)
