"""CLI commands of the stream stage, registered on the root ``flywheel`` app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli import console, err_console, settings_of

# Exit codes of `flywheel submit`
SUBMIT_OK, SUBMIT_REJECTED, SUBMIT_FAILED = 0, 1, 4


def register(app: typer.Typer) -> None:
    @app.command("submit")
    def submit(
        ctx: typer.Context,
        file: Annotated[str, typer.Argument(help="JSONL file of feedback events, or - for stdin")],
        show: Annotated[int, typer.Option(help="how many bad lines to list")] = 20,
    ) -> None:
        """Validate and send a JSONL file of feedback events to Kafka.

        Exit code 0: all sent; 1: some lines rejected (the valid ones were sent);
        4: Kafka did not confirm some events (resubmitting is safe).
        """
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from pipelines.sdk import FeedbackClient
        from pipelines.submit import count_lines, submit_file

        if file != "-" and not Path(file).is_file():
            raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
        settings = settings_of(ctx)
        total = count_lines(file)
        with (
            FeedbackClient(settings) as client,
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
            report = submit_file(client, file, on_progress=lambda n: progress.advance(task, n))
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

    @app.command("serve-feedback")
    def serve_feedback(
        ctx: typer.Context,
        host: Annotated[str | None, typer.Option(help="default: http.host")] = None,
        port: Annotated[int | None, typer.Option(help="default: http.port")] = None,
    ) -> None:
        """Run the HTTP feedback endpoint (POST /v1/feedback, GET /healthz)."""
        from pipelines.http_api import serve

        settings = settings_of(ctx)
        http = settings.http.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v})
        serve(settings.model_copy(update={"http": http}))
