"""The live metric of a model's versions over time, with promotions and rollbacks marked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

MARKS = {"promote": "green", "force-promote": "orange", "rollback": "grey", "auto-rollback": "red"}


def rolling(values: list[float], size: int) -> list[float]:
    """The mean of the last ``size`` values at each point (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= size:
            total -= values[i - size]
        out.append(total / min(i + 1, size))
    return out


def plot_live(ledger, entries, model: str, spec, path: Path, window: int = 50) -> Path:
    """A PNG at ``path``: per version, the rolling mean (``window`` labelled predictions) of
    the live metric by prediction time; a vertical line per champion move."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for live in ledger.per_version(model):
        outcomes = ledger.outcomes(model, live.version)
        if not outcomes:
            continue
        xs = [datetime.fromtimestamp(o.predicted_at, UTC) for o in outcomes]
        ax.plot(xs, rolling([o.value for o in outcomes], window), label=f"v{live.version} (n={live.n})")
    for e in entries:
        colour = MARKS.get(e.action)
        if colour is None:
            continue
        ax.axvline(e.time, color=colour, linestyle="--", linewidth=1)
        ax.annotate(
            f"{e.action} v{e.version}",
            (e.time, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color=colour,
        )
    ax.set_ylabel(f"live {spec.live_metric}{spec.live_unit} (rolling {window})")
    ax.set_title(f"{model}: live {spec.live_metric} by version")
    if ax.lines:
        ax.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
