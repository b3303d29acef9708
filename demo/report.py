"""What the demo shows at the end: the version table, the event accounting, a plot, a report."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from demo.traffic import MODEL, STATE


def plot(rows: list[dict], path: Path, metric: str = "accuracy", baseline: str = "linear probe") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [f"v{r['version']}" for r in rows]
    ax.plot(xs, [r["golden"] for r in rows], "o-", label=f"golden {metric}")
    ax.plot(xs, [r["old"] for r in rows], "s--", label=f"old-set {metric}")
    probe = [float("nan") if r.get("probe") is None else r["probe"] for r in rows]
    ax.plot(xs, probe, "x:", color="grey", label=f"{baseline} (golden)")
    for x, r in zip(xs, rows, strict=True):
        colour = {"promoted": "green", "rejected": "red"}.get(r["verdict"], "grey")
        ax.annotate(
            r["verdict"],
            (x, r["golden"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            color=colour,
            fontsize=9,
        )
    ax.set_ylabel(metric)
    ax.set_title("Flywheel demo: candidate versions on fixed holdouts")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(
    console,
    settings,
    rows,
    acc,
    elapsed: float,
    model: str = MODEL,
    folder: Path = STATE / "report",
    metric: str = "accuracy",
    baseline: str = "probe",
    extra: list[Path] = (),
) -> None:
    """The version table, the accounting, a plot and a report (also logged to MLflow);
    ``extra``: images shown in the report too (e.g. the review grid)."""
    import shutil

    import mlflow

    short = {"accuracy": "acc"}.get(metric, metric)
    caption = (
        "probe: linear probe on the frozen encoder fitted on the version's training data"
        if baseline == "probe"
        else f"baseline: {baseline}"
    )
    table = Table(
        "version",
        "data",
        "new samples",
        f"golden {short}",
        "baseline (golden)" if baseline != "probe" else "probe (golden)",
        f"old-set {short}",
        "verdict",
        title="versions",
        caption=caption,
    )
    for r in rows:
        table.add_row(
            f"v{r['version']}",
            r["kind"],
            str(r["new"]),
            f"{r['golden']:.3f}",
            "-" if r["probe"] is None else f"{r['probe']:.3f}",
            f"{r['old']:.3f}",
            r["verdict"],
        )
    console.print(table)
    counts = Table("topic", "events", title="event accounting")
    for name in ("raw", "clean", "review", "dlq", "duplicates"):
        counts.add_row(name, f"{getattr(acc, name):,}")
    console.print(counts)
    console.print(
        f"raw {acc.raw:,} = clean + review + dlq + duplicates {acc.accounted:,}: "
        + ("[green]balanced[/green]" if acc.balanced else "[red]NOT balanced[/red]")
    )
    folder.mkdir(parents=True, exist_ok=True)
    png = plot(
        rows, folder / "versions.png", metric, "linear probe, same data" if baseline == "probe" else baseline
    )
    shown = []
    for path in extra:
        shutil.copy(path, folder / path.name)
        shown.append(path.name)
    (folder / "versions.json").write_text(
        json.dumps({"versions": rows, "accounting": acc.__dict__, "seconds": elapsed}, indent=2, default=str)
    )
    lines = [
        f"# Flywheel demo: {model}",
        "",
        f"| version | data | new samples | golden {short} | {baseline} (golden) "
        f"| old-set {short} | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| v{r['version']} | {r['kind']} | {r['new']} | {r['golden']:.3f} "
        f"| {'-' if r['probe'] is None else format(r['probe'], '.3f')} | {r['old']:.3f} | {r['verdict']} |"
        for r in rows
    ]
    lines += [
        "",
        f"Accounting: raw {acc.raw}, clean {acc.clean}, review {acc.review}, dlq {acc.dlq}, "
        f"duplicates {acc.duplicates}; balanced: {acc.balanced}",
        "",
        f"Took {elapsed:.0f} s.",
        "",
        "![versions](versions.png)",
        *(f"![{name}]({name})" for name in shown),
    ]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"flywheel/{model}")
    with mlflow.start_run(run_name="demo-report"):
        mlflow.log_artifacts(str(folder), "demo-report")
        mlflow.log_metric("demo_seconds", elapsed)
    promoted = sum(r["verdict"] == "promoted" for r in rows[1:])
    rejected = sum(r["verdict"] == "rejected" for r in rows[1:])
    console.print(f"report: {folder / 'report.md'} and {png} (also in MLflow, run 'demo-report')")
    console.print(f"{promoted} promotions, {rejected} rejection, demo took {elapsed / 60:.1f} min")
    if promoted < 2 or rejected < 1 or not acc.balanced:
        raise SystemExit("demo: expected at least two promotions, one rejection and a balanced accounting")


def version_row(outcome, kind: str) -> dict:
    """A line of the version table from a retrain or bootstrap outcome."""
    report = outcome.report
    return {
        "version": outcome.version,
        "kind": kind,
        "new": outcome.lineage.new_samples if outcome.lineage else 0,
        "quarantined": outcome.quarantine.rows if outcome.quarantine else 0,
        "golden": report.value("golden", "candidate"),
        "probe": report.value("golden", "baseline"),
        "old": report.value("old", "candidate"),
        "champion_golden": report.value("golden", "champion"),
        "verdict": outcome.status,
        "reasons": outcome.reasons,
    }
