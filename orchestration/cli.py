"""CLI commands of orchestration: bootstrap, retrain, rollback, history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli import console, err_console, settings_of


def _print_outcome(outcome) -> None:
    from training.cli import print_report

    if outcome.report:
        print_report(outcome.report, f"{outcome.model} v{outcome.version}")
    console.print(
        f"{outcome.model}: {outcome.status.upper()}" + (f" v{outcome.version}" if outcome.version else "")
    )
    for reason in outcome.reasons:
        console.print(f"  {reason}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("bootstrap")
    def bootstrap_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Option(help="name of the new model")],
        data: Annotated[Path, typer.Option(help="labelled JSONL or CSV (text and label columns)")],
        task: Annotated[str, typer.Option(help="task adapter")] = "text-classification",
        labels: Annotated[
            str | None, typer.Option(help="comma-separated label set (default: from data)")
        ] = None,
        golden: Annotated[
            Path | None, typer.Option(help="golden set file (default: a share of data)")
        ] = None,
    ) -> None:
        """Train version 1 of a new model, fix its golden set, register it and judge it against the floors."""
        from orchestration.flow import bootstrap_model

        label_list = [x.strip() for x in labels.split(",")] if labels else None
        outcome = bootstrap_model(settings_of(ctx), model, task, data, label_list, golden)
        _print_outcome(outcome)
        raise typer.Exit(outcome.exit_code)

    @app.command("retrain")
    def retrain_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Option(help="model name")],
        if_ready: Annotated[
            bool, typer.Option("--if-ready/--force", help="skip unless enough new labels")
        ] = True,
    ) -> None:
        """One retrain: dataset → gate → train → evaluate → register → promote or reject.

        Exit codes: 0 promoted or nothing to do; 10 rejected by the gate; 11 failed;
        12 another retrain of the model is running. Crontab: see the README.
        """
        from orchestration.flow import retrain

        outcome = retrain(settings_of(ctx), model, if_ready=if_ready)
        _print_outcome(outcome)
        raise typer.Exit(outcome.exit_code)

    @app.command("rollback")
    def rollback_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="model name")],
        to: Annotated[
            int | None, typer.Option(help="version to serve (default: the previous champion)")
        ] = None,
        reason: Annotated[str, typer.Option(help="recorded in the history")] = "manual rollback",
    ) -> None:
        """Move the champion back (checks the target loads and predicts first)."""
        from orchestration.registry import Registry

        current, target = Registry(settings_of(ctx)).rollback(model, to, reason)
        console.print(f"{model}: champion v{current} -> v{target} (v{current} is now 'previous')")

    @app.command("status")
    def status_cmd(ctx: typer.Context) -> None:
        """Per model: champion and its metrics, samples waiting, readiness, last runs; health of the parts."""
        from rich.table import Table

        from orchestration.status import model_status, part_health
        from training.model_store import ModelStore

        settings = settings_of(ctx)
        health = Table("part", "state", title="health")
        for name, state in part_health(settings).items():
            health.add_row(name, state)
        console.print(health)
        names = ModelStore(settings.state_dir).names()
        if not names:
            console.print("no models yet: create one with `flywheel bootstrap`")
            return
        table = Table(
            "model", "champion", "golden acc", "old acc", "waiting", "ready", "last runs", title="models"
        )
        for name in names:
            st = model_status(settings, name)
            m = st["metrics"]
            runs = ", ".join(f"{e['action']} v{e.get('version')}" for e in st["last_runs"]) or "-"
            table.add_row(
                name,
                f"v{st['champion']}" if st["champion"] else "-",
                f"{m['golden.accuracy']:.3f}" if "golden.accuracy" in m else "-",
                f"{m['old.accuracy']:.3f}" if "old.accuracy" in m else "-",
                f"{st['waiting']}/{st['threshold']}",
                "yes" if st["ready"] else "no",
                runs,
            )
        console.print(table)

    @app.command("run")
    def run_cmd(ctx: typer.Context) -> None:
        """The long-running loop on embedded defaults: broker, stream job, ingestor, HTTP endpoint and
        the periodic readiness check; restarts crashed parts; Ctrl-C / SIGTERM stop it cleanly."""
        from orchestration.supervisor import Supervisor, readiness_check

        settings = settings_of(ctx)
        parts = ("stream", "ingest", "http") if settings.run.http else ("stream", "ingest")
        supervisor = Supervisor(settings, parts, log=err_console.print)
        supervisor.run_forever(readiness_check(settings, log=err_console.print))
        console.print("flywheel run: stopped")

    @app.command("history")
    def history_cmd(ctx: typer.Context, model: Annotated[str, typer.Argument(help="model name")]) -> None:
        """Every promotion, rejection and rollback of a model: time, versions, reason, actor."""
        from rich.table import Table

        from orchestration import history

        entries = history.read(settings_of(ctx).state_dir, model)
        if not entries:
            err_console.print(f"no history for {model!r} yet")
            raise typer.Exit(1)
        table = Table("time", "action", "version", "from", "actor", "reason", title=f"{model} history")
        for e in entries:
            table.add_row(
                e["time"],
                e["action"],
                str(e.get("version", "")),
                str(e.get("previous") or e.get("champion") or ""),
                e["actor"],
                e.get("reason", ""),
            )
        console.print(table)
