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
    rows = [r for r in rows if r["golden"] is not None]  # a window refused before fitting has no version
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
    live: dict | None = None,
) -> None:
    """The version table, the accounting, a plot and a report (also logged to MLflow);
    ``extra``: images shown in the report too (e.g. the review grid); ``live``: the final
    act's live figures and history (the text demo)."""
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
        *(["then"] if any(r.get("then") for r in rows) else []),
        title="versions",
        caption=caption,
    )
    for r in rows:
        table.add_row(
            _v(r["version"]),
            r["kind"],
            str(r["new"]),
            _f(r["golden"]),
            _f(r["probe"]),
            _f(r["old"]),
            r["verdict"],
            *([r.get("then", "")] if any(x.get("then") for x in rows) else []),
        )
    console.print(table)
    live_lines = live_section(console, settings, model, live, folder) if live else []
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
        f"| old-set {short} | verdict | then |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {_v(r['version'])} | {r['kind']} | {r['new']} | {_f(r['golden'])} "
        f"| {_f(r['probe'])} | {_f(r['old'])} | {r['verdict']} "
        f"| {r.get('then', '')} |"
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
        *live_lines,
    ]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"flywheel/{model}")
    with mlflow.start_run(run_name="demo-report"):
        mlflow.log_artifacts(str(folder), "demo-report")
        mlflow.log_metric("demo_seconds", elapsed)
    promoted = sum(r["verdict"] == "promoted" for r in rows[1:])
    rejected = sum(r["verdict"] in ("rejected", "data-rejected") for r in rows[1:])
    console.print(f"report: {folder / 'report.md'} and {png} (also in MLflow, run 'demo-report')")
    console.print(f"{promoted} promotions, {rejected} rejection, demo took {elapsed / 60:.1f} min")
    if promoted < 2 or rejected < 1 or not acc.balanced:
        raise SystemExit("demo: expected at least two promotions, one rejection and a balanced accounting")
    if live is not None and live["state"] != "rolled-back":
        raise SystemExit(
            f"demo: expected the live monitor to roll the forced version back, it said {live['state']}"
        )


def live_section(console, settings, model: str, live: dict, folder: Path) -> list[str]:
    """The final act in the console and the report: live accuracy per version, the champion's
    moves, and the live plot (the one the monitor logged to MLflow)."""
    from flywheel.tasks import spec_class
    from orchestration import history
    from orchestration.live_plot import plot_live
    from pipelines.live import LiveLedger

    status = live["status"]
    table = Table("version", "labelled predictions", f"live {status['metric']}", "interval", title="live")
    lines = [
        "",
        "## Live traffic",
        "",
        f"| version | labelled | live {status['metric']} | interval |",
        "|---|---|---|---|",
    ]
    for v in status["versions"]:
        lo, hi = v.get("interval") or (float("nan"), float("nan"))
        table.add_row(f"v{v['version']}", str(v["n"]), f"{v['mean']:.3f}", f"{lo:.3f}-{hi:.3f}")
        lines.append(f"| v{v['version']} | {v['n']} | {v['mean']:.3f} | {lo:.3f}-{hi:.3f} |")
    console.print(table)
    moves = [f"{a} v{v}" + (f" (from v{p})" if p else "") for a, v, p in live["history"]]
    console.print("champion moves: " + " -> ".join(moves), soft_wrap=True)
    alert = status["last_auto_rollback"]
    if alert:
        console.print(
            f"[bold red]ALERT[/] automatic rollback v{alert['from']} -> v{alert['to']}: {alert['reason']}"
        )
        lines += ["", f"**Automatic rollback** v{alert['from']} -> v{alert['to']}: {alert['reason']}"]
    ledger = LiveLedger.of(settings, readonly=True)
    try:
        entries = history.entries(settings.state_dir, model)
        plot_live(ledger, entries, model, spec_class("text-classification"), folder / "live.png")
    finally:
        ledger.close()
    lines += ["", "Champion moves: " + " → ".join(moves), "", "![live](live.png)"]
    return lines


def _v(version) -> str:
    return "-" if version is None else f"v{version}"


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def version_row(outcome, kind: str) -> dict:
    """A line of the version table from a retrain or bootstrap outcome (a window refused before
    fitting, ``data-rejected``, has no version and no figures)."""
    report = outcome.report
    if report is None:
        return {
            "version": None,
            "kind": kind,
            "new": outcome.lineage.new_samples if outcome.lineage else 0,
            "quarantined": outcome.quarantine.rows if outcome.quarantine else 0,
            "golden": None,
            "probe": None,
            "old": None,
            "champion_golden": None,
            "verdict": outcome.status,
            "reasons": outcome.reasons,
        }
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
