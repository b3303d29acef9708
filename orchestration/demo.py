"""`make demo`: the main job on embedded defaults.

For now it exercises the submission path end to end: starts the embedded broker
(unless a cluster is configured), creates the topics, submits the example files
(one of them with bad lines) and prints what was sent and rejected. Later stages
extend it into the full loop (stream job, Feast, retrain, gate).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from flywheel.broker import for_settings
from flywheel.kafka import ensure_topics
from flywheel.settings import load_settings
from pipelines.sdk import FeedbackClient
from pipelines.submit import submit_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    console = Console()
    settings = load_settings()
    broker = for_settings(settings) if settings.embedded_broker else None
    started = broker is not None and not broker.status().running
    if broker is not None:
        status = broker.start(settings.broker.start_timeout_s)
        console.print(f"embedded broker at {status.address} (pid {status.pid})")
    try:
        ensure_topics(settings)
        table = Table("file", "sent", "rejected", "failed", "seconds", title="feedback submitted")
        with FeedbackClient(settings) as client:
            for name in ("feedback.jsonl", "feedback-with-errors.jsonl"):
                report = submit_file(client, EXAMPLES / name)
                table.add_row(
                    name,
                    str(report.sent),
                    str(len(report.rejected)),
                    str(len(report.failed)),
                    f"{report.seconds:.2f}",
                )
                for problem in report.rejected:
                    console.print(
                        f"  {name} line {problem.line}: {problem.reason}",
                        soft_wrap=True,
                        markup=False,
                        highlight=False,
                    )
        console.print(table)
    finally:
        if started:
            broker.stop()
            console.print("embedded broker stopped")


if __name__ == "__main__":
    main()
