"""CLI commands of orchestration: bootstrap, retrain, repair, rollback, status, run, history.

Each command is a module-level function (importable and testable alone); ``register``
adds them to the ``flywheel`` app.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.cli import console, err_console, group, grouped, settings_of
from flywheel.errors import FlywheelError
from flywheel.layout import StateLayout
from flywheel.lazy import lazy_import
from flywheel.locks import LockBusy, file_lock

_admin_api = lazy_import("orchestration.admin_api")
_flow = lazy_import("orchestration.flow")
_forget = lazy_import("orchestration.forget")
history = lazy_import("orchestration.history")
_lineage = lazy_import("orchestration.lineage")
_metrics = lazy_import("orchestration.metrics")
_monitor = lazy_import("orchestration.monitor")
_registry = lazy_import("orchestration.registry")
_serving = lazy_import("orchestration.serving")
_status = lazy_import("orchestration.status")
_supervisor = lazy_import("orchestration.supervisor")
_http_api = lazy_import("pipelines.http_api")
_training_cli = lazy_import("training.cli")


def print_outcome(outcome) -> None:

    if outcome.report is not None:
        _training_cli.print_report(outcome.report, f"{outcome.model} v{outcome.version}")
    if outcome.quarantine is not None and outcome.quarantine.rows:
        for line in outcome.quarantine.lines():
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"{outcome.model}: {outcome.status.upper()}" + (f" v{outcome.version}" if outcome.version else "")
    )
    for reason in outcome.reasons:
        console.print(f"  {reason}", markup=False, highlight=False, soft_wrap=True)


def bootstrap_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="name of the new model")],
    data: Annotated[
        Path,
        typer.Option(
            help="JSONL or CSV of samples: text and label columns (text-classification), or "
            "input_png_b64 and target_png_b64 / input_path and target_path (image-restoration)"
        ),
    ],
    task: Annotated[str, typer.Option(help="the task: text-classification or image-restoration")] = (
        "text-classification"
    ),
    labels: Annotated[str | None, typer.Option(help="comma-separated label set (default: from data)")] = None,
    golden: Annotated[Path | None, typer.Option(help="golden set file (default: a share of data)")] = None,
) -> None:
    """Train version 1 of a new model, fix its golden set, register it and judge it against the floors."""

    label_list = [x.strip() for x in labels.split(",")] if labels else None
    outcome = _flow.bootstrap_model(settings_of(ctx), model, task, data, label_list, golden)
    print_outcome(outcome)
    raise typer.Exit(outcome.exit_code)


def retrain_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="model name")],
    if_ready: Annotated[
        bool, typer.Option("--if-ready/--force", help="skip unless enough new labels")
    ] = True,
) -> None:
    """One retrain: repair → readiness → dataset → data gate → label screen → fit → evaluate →
    register → decide.

    Exit codes: 0 promoted or nothing to do; 10 rejected by the promotion gate; 11 failed
    or stopped (the window is retried); 12 another retrain of the model is running; 13 the
    data gate or the label screen refused the window (recorded, not retried). Crontab:
    docs/guide/scheduling.md.
    """

    outcome = _flow.retrain(
        settings_of(ctx), model, if_ready=if_ready, log=lambda m: err_console.print(f"[dim]{m}[/]")
    )
    print_outcome(outcome)
    raise typer.Exit(outcome.exit_code)


def repair_cmd(ctx: typer.Context, model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """Finish what a crash left: an interrupted alias move, versions registered but not decided.

    Refuses (exit 12) while a retrain of the model runs: its version is not abandoned, it is
    being decided by that retrain."""

    settings = settings_of(ctx)
    for receipt in _forget.complete_pending(settings):
        console.print(f"erasure {receipt.receipt}: completed ({receipt.events} event ids)")
    try:
        with file_lock(StateLayout.of(settings).retrain_lock(model), timeout_s=0.5):
            done = _registry.Registry(settings).repair(model)
    except LockBusy:
        err_console.print(f"{model}: a retrain is running; it repairs and decides its own versions")
        raise typer.Exit(_flow.EXIT_BUSY) from None
    for version, what in done:
        console.print(f"{model} v{version}: {what}")
    if not done:
        console.print(f"{model}: nothing to repair")


def rollback_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    to: Annotated[int | None, typer.Option(help="version to serve (default: the previous champion)")] = None,
    reason: Annotated[str, typer.Option(help="recorded in the history")] = "manual rollback",
) -> None:
    """Move the champion back (checks the target loads and predicts first)."""

    current, target = _registry.Registry(settings_of(ctx)).rollback(model, to, reason)
    console.print(f"{model}: champion v{current} -> v{target} (v{current} is now 'previous')")


def promote_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="the version to make champion")],
    force: Annotated[bool, typer.Option("--force", help="past the promotion gate (required)")] = False,
    reason: Annotated[str, typer.Option(help="why, kept in the history with who did it")] = "",
) -> None:
    """Make a version the champion by hand, past the gate (checks it loads and predicts first).
    The live monitor watches it like any promotion and rolls it back if it does worse."""

    if not force:
        err_console.print(
            "the promotion gate promotes candidates (`flywheel model retrain`); to override it, pass "
            "--force --reason TEXT (recorded in the history)"
        )
        raise typer.Exit(2)
    before, after = _registry.Registry(settings_of(ctx)).force_promote(model, version, reason)
    was = f"v{before}" if before is not None else "none"
    console.print(f"{model}: champion {was} -> v{after} (forced: {reason}); the live monitor watches it")


def monitor_cmd(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="look once and exit (cron, Airflow)")] = False,
    model: Annotated[str | None, typer.Option(help="only this model (default: every model)")] = None,
) -> None:
    """Compare each promoted champion's live metric with the previous champion's; roll back
    automatically when it is worse with confidence. Exit code 3 when a rollback was needed
    but refused or the monitor failed."""

    settings = settings_of(ctx)
    while True:
        results = _monitor.monitor_once(
            settings, [model] if model else None, log=lambda m: console.print(m, markup=False)
        )
        if once:
            raise typer.Exit(3 if any(r.state == "failed" for r in results) else 0)
        time.sleep(settings.monitor.interval_s)


def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="default: http.host")] = None,
    port: Annotated[int | None, typer.Option(help="default: http.port")] = None,
) -> None:
    """The HTTP app: POST /v1/feedback, POST /v1/predict (each model's champion, following the
    alias), GET /healthz, /openapi.json. (`flywheel serve-feedback` is the same command.)"""

    settings = settings_of(ctx)
    _metrics.register_state(settings)  # /metrics shows the loop's state beside the app's counters
    http = settings.http.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
    settings = settings.model_copy(update={"http": http})
    _http_api.serve(
        settings,
        _serving.ChampionPredictor(settings),
        extend=lambda app: _admin_api.add_admin_routes(app, settings),
    )


def status_cmd(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False
) -> None:
    """Per model: champion, previous and candidate with their metrics, samples waiting, readiness,
    last runs; health of the parts."""

    data = _status.status(settings_of(ctx))
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    health = Table("part", "state", title="health")
    for name, state in data["health"].items():
        health.add_row(name, state)
    console.print(health)
    if not data["models"]:
        console.print("no models yet: create one with `flywheel model bootstrap`")
        return
    table = Table(
        "model", "champion", "golden", "old set", "previous", "candidate", "waiting", "ready", "last runs"
    )
    for st in data["models"]:
        champ = st["champion"] or {}
        m = champ.get("metrics", {})
        metric = st["metric"]
        runs = ", ".join(_run_label(e) for e in st["last_runs"]) or "-"

        def ver(v):
            return f"v{v['version']} ({v['verdict']})" if v else "-"

        table.add_row(
            st["model"],
            f"v{champ['version']}" if champ else "-",
            f"{metric} {m[f'golden.{metric}']:.3f}" if f"golden.{metric}" in m else "-",
            f"{metric} {m[f'old.{metric}']:.3f}" if f"old.{metric}" in m else "-",
            ver(st["previous"]),
            ver(st["candidate"]),
            f"{st['waiting']}/{st['threshold']}",
            "yes" if st["ready"] else "no",
            runs,
        )
        if not st["consistent"] or st["open_decision"] or st["pending_versions"]:
            err_console.print(
                f"{st['model']}: an interrupted decision or pending versions; "
                f"run `flywheel model repair {st['model']}`"
            )
    console.print(table)
    for st in data["models"]:
        refused = st["data_rejected_windows"]
        if refused and refused[-1].get("reasons"):
            console.print(f"{st['model']}: last window refused before training: {refused[-1]['reasons'][0]}")
        print_live(st["model"], st["live"])


def _run_label(entry: dict) -> str:
    """A history entry in the status table: ``promote v3``, ``data-rejected (labels_suspect)``."""
    if entry.get("version") is None:
        return f"{entry['action']} ({str(entry.get('reason', '')).split(':')[0] or '-'})"
    return f"{entry['action']} v{entry['version']}"


def print_live(model: str, live: dict) -> None:
    if not live["versions"]:
        return
    unit = live["unit"]
    table = Table(
        "version", "labelled", f"live {live['metric']}", "interval", "from", "to", title=f"{model}: live"
    )
    for v in live["versions"]:
        lo_hi = v.get("interval")
        table.add_row(
            f"v{v['version']}",
            str(v["n"]),
            f"{v['mean']:.3f}{unit}",
            f"{lo_hi[0]:.3f}-{lo_hi[1]:.3f}" if lo_hi else "-",
            f"{_clock(v['since'])}",
            f"{_clock(v['until'])}",
        )
    console.print(table)
    if live["monitor"]:
        console.print(f"  monitor: {live['monitor']}", markup=False, soft_wrap=True)
    alert = live["last_auto_rollback"]
    if alert:
        err_console.print(
            f"[bold red]ALERT[/] {model}: automatic rollback v{alert['from']} -> v{alert['to']} at "
            f"{alert['time']}: {alert['reason']}",
            soft_wrap=True,
        )


def _clock(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%m-%d %H:%M:%S")


def run_cmd(ctx: typer.Context) -> None:
    """The long-running loop on embedded defaults: broker, stream job, ingestor, HTTP app (feedback
    and serving), the periodic readiness check and the live monitor; restarts crashed parts;
    Ctrl-C / SIGTERM stop it cleanly
    (a retrain under way stops at its next step boundary)."""

    settings = settings_of(ctx)
    _metrics.serve_metrics(settings, log=err_console.print)
    run = settings.run
    parts = tuple(
        name for name, on in (("stream", run.stream), ("ingest", run.ingest), ("http", run.http)) if on
    )
    supervisor = _supervisor.Supervisor(settings, parts, log=err_console.print)
    checks = [_supervisor.readiness_check(settings, log=err_console.print)]
    if settings.monitor.enabled:
        checks.append(_supervisor.live_monitor(settings, log=err_console.print))
    if not settings.run.http:  # the HTTP app keeps the review queue in step when it runs
        checks.append(_supervisor.review_queue(settings, log=err_console.print))
    supervisor.run_forever(checks)
    console.print("flywheel run: stopped")


def history_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every promotion, rejection and rollback of a model: time, versions, reason, actor."""

    entries = history.read(settings_of(ctx).state_dir, model)
    if as_json:
        print(json.dumps(entries, indent=2, default=str))
        return
    if not entries:
        err_console.print(f"no history for {model!r} yet")
        raise typer.Exit(1)
    if console.width < 120:  # a narrow terminal: two lines per entry instead of a wrapped table
        console.print(f"[bold]{model} history[/]")
        for e in entries:
            was, now = e.get("previous"), e.get("champion")
            moved = f"v{was} -> v{now}" if was and was != now else (f"v{now}" if now else "none")
            version = f" v{e['version']}" if e.get("version") is not None else ""
            console.print(
                f"{e['time']}  [bold]{e['action']}{version}[/]  champion {moved}  by {e['actor']}",
                highlight=False,
            )
            if e.get("reason"):
                pad = "    "
                width = console.width
                text = textwrap.fill(str(e["reason"]), width, initial_indent=pad, subsequent_indent=pad)
                console.print(text, markup=False, highlight=False)
        return
    table = Table(
        "time", "action", "version", "from", "champion after", "actor", "reason", title=f"{model} history"
    )
    for e in entries:
        table.add_row(
            e["time"],
            e["action"],
            "" if e.get("version") is None else str(e["version"]),
            str(e.get("previous") or ""),
            str(e.get("champion") or ""),
            e["actor"],
            e.get("reason", ""),
        )
    console.print(table)


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def forget_cmd(
    ctx: typer.Context,
    event_id: Annotated[str | None, typer.Option(help="erase this event (and its review answer)")] = None,
    subject_id: Annotated[str | None, typer.Option(help="erase every event of this data subject")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be erased; change nothing")
    ] = False,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain", help="then train a successor from the base model without it, through the gate"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the receipt as JSON")] = False,
) -> None:
    """Erase one event or one data subject everywhere Flywheel keeps it: the Feast offline
    and online stores, images, the review queue, the live ledger, dead letters, the models'
    data copies; tag the MLflow versions that trained on it; write a receipt to the audit log.

    Resubmitting a forgotten event or subject is refused (reason `forgotten`). Topic data
    expires with kafka.retention_hours. A kill at any step leaves a journal that the next
    `forget` or `model repair` completes. Exit codes: 0 done; 2 bad arguments; 10 the
    successor (--retrain) was not promoted. See docs/guide/privacy.md.
    """

    settings = settings_of(ctx)
    try:
        receipt = _forget.forget(settings, event_id, subject_id, dry_run, log=err_console.print)
    except _forget.ForgetError as exc:
        err_console.print(f"forget: {exc}")
        raise typer.Exit(2) from None
    except FlywheelError as exc:
        err_console.print(f"forget: {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:  # noqa: BLE001 - a store behind a step (MLflow) failed: said, exit 1
        err_console.print(
            f"forget: a step failed ({type(exc).__name__}: {exc}); its tombstones are written and "
            "the journal stays: the next `flywheel forget` or `flywheel model repair` completes it"
        )
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(receipt.to_dict(), indent=2))
    else:
        what = "would erase" if dry_run else "erased"
        say(f"{receipt.receipt}: {what} {receipt.events} event id(s) (by {receipt.by})")
        for step, counts in receipt.removed.items():
            say(f"  {step}: {counts}")
    if not retrain or dry_run:
        return
    tagged = receipt.removed.get("mlflow", {}).get("versions_tagged", {})
    models = sorted({key.split("/v")[0] for key in tagged})
    worst = 0
    for model in models:
        outcome = _flow.retrain(settings, model, if_ready=False, wait_for_lock=True, from_base=True)
        print_outcome(outcome)
        worst = max(worst, outcome.exit_code)
    if not models:
        console.print("no version trained on the erased data: nothing to retrain")
    raise typer.Exit(worst)


def lineage_event_cmd(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="the event_id")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Where one event went: its fate, Feast rows, images, review item, the versions that
    trained on it and the predictions they served."""

    found = _lineage.event_lineage(settings_of(ctx), event_id)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2))
        return
    say(event_id + (" (forgotten)" if found.forgotten else ""))
    say(f"  fate: {found.fate or 'none recorded'}")
    files = ", ".join(f"{n} ({c})" for n, c in found.offline_files.items()) or "none"
    say(f"  Feast offline: {files}; online row: {'yes' if found.online_row else 'no'}")
    if found.images:
        say(f"  images: {len(found.images)}")
    if found.review_item:
        say(f"  review item: {found.review_item['model']}, {found.review_item['status']}")
    if found.review_answer:
        say(f"  review answer: {found.review_answer['event_id']} ({found.review_answer['fate']})")
    for use in found.versions:
        roles = ", ".join(use.roles)
        say(f"  {use.model} v{use.version}: {roles}; served {use.predictions_served} prediction(s)")
    if not found.versions:
        say("  no version used it")


def lineage_version_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version number")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """A version's data by role, origin, label, source and ingestion day, with the SHA-256 of
    its training id set (equal digests: the same samples)."""

    try:
        summary = _lineage.version_lineage(settings_of(ctx), model, version)
    except FlywheelError as exc:
        err_console.print(str(exc))
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
        return
    say(f"{model} v{version}: {summary.samples} sample ids")
    for title, counts in (
        ("by role", summary.by_role),
        ("training, by origin", summary.by_origin),
        ("training, by label", summary.by_label),
        ("training, by source", summary.by_source),
        ("training, by ingestion day", summary.by_day),
    ):
        say(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    say(f"  training ids sha256: {summary.train_ids_sha256}")
    say(f"  erased since: {summary.forgotten}; lineage file: {summary.lineage_bytes} bytes")


MODEL_COMMANDS = {
    "bootstrap": bootstrap_cmd,
    "retrain": retrain_cmd,
    "promote": promote_cmd,
    "rollback": rollback_cmd,
    "repair": repair_cmd,
    "history": history_cmd,
    "monitor": monitor_cmd,
}
TOP_COMMANDS: dict[str, Callable[..., None]] = {
    "run": run_cmd,
    "status": status_cmd,
    "serve": serve_cmd,
    "forget": forget_cmd,
}
LINEAGE_COMMANDS: dict[str, Callable[..., None]] = {
    "event": lineage_event_cmd,
    "version": lineage_version_cmd,
}


def register(app: typer.Typer) -> None:
    for name, command in MODEL_COMMANDS.items():
        grouped(app, "model", name, command)
    for name, command in TOP_COMMANDS.items():
        app.command(name)(command)
    app.command("serve-feedback", hidden=True)(serve_cmd)
    for name, command in LINEAGE_COMMANDS.items():
        group(app, "lineage").command(name)(command)
