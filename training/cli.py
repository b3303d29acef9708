"""CLI commands of the training stage: bootstrap, train."""

from __future__ import annotations

from typing import Annotated

import typer

from flywheel.cli import console, err_console, settings_of


def print_report(report: dict, title: str) -> None:
    from rich.table import Table

    from training.evaluate import fmt, table_rows

    metric = report["metric"]
    table = Table("holdout", "size", f"champion {metric}", f"candidate {metric}", "delta", title=title)
    for name, size, champ, cand, delta in table_rows(report):
        table.add_row(
            name, str(size), fmt(champ), fmt(cand), ("+" if delta and delta > 0 else "") + fmt(delta)
        )
    console.print(table)
    if "forgetting" in report:
        console.print(f"forgetting (champion old-set {metric} - candidate's): {report['forgetting']:+.3f}")


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        model: Annotated[str, typer.Option(help="registered model name")],
    ) -> None:
        """Dataset from Feast → Great Expectations gate → LoRA + distillation → evaluation table.

        Trains a candidate only; the registry decides whether it becomes champion.
        """
        from training.run import train

        settings = settings_of(ctx)
        run = train(settings, model)
        lineage = run.lineage
        err_console.print(
            f"window ({lineage['window_start']}, {lineage['window_end']}]: {lineage['new_samples']} new "
            f"samples ({lineage['new_train']} trained), {lineage['replay']} replayed"
        )
        console.print(
            f"candidate {model} v{run.version} ({run.fit['samples_per_s']:.0f} samples/s) -> {run.path}"
        )
        print_report(run.report, f"{model}: champion v{run.champion} vs candidate v{run.version}")
