"""The live metric of a model's versions over time, with promotions and rollbacks marked."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.lazy import lazy_import
from flywheel.tasks import spec_for
from orchestration import history
from pipelines.live import LiveLedger

_matplotlib = lazy_import("matplotlib")
plt = lazy_import("matplotlib.pyplot")

if TYPE_CHECKING:
    from flywheel.settings import Settings

GAP_S = 30.0  # predictions further apart than this (per hour plotted) are not joined by a line
PLOTTED = 20_000  # the latest labelled predictions plotted per version
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
    _matplotlib.use("Agg")  # before pyplot loads (plt is lazy)

    fig, ax = plt.subplots(figsize=(8, 4))
    for live in ledger.per_version(model):
        outcomes = ledger.outcomes(model, live.version, limit=PLOTTED)
        if not outcomes:
            continue
        xs: list = [datetime.fromtimestamp(o.predicted_at, UTC) for o in outcomes]
        ys: list = rolling([o.value for o in outcomes], window)
        gap = GAP_S * (1 + (outcomes[-1].predicted_at - outcomes[0].predicted_at) // 3600)
        for i in range(len(outcomes) - 1, 0, -1):  # no line across a stretch with no predictions
            if outcomes[i].predicted_at - outcomes[i - 1].predicted_at > gap:
                xs.insert(i, xs[i])
                ys.insert(i, float("nan"))
        ax.plot(xs, ys, ".-", markersize=2, linewidth=1, label=f"v{live.version} (n={live.n})")
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
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no labelled predictions yet", transform=ax.transAxes, ha="center", color="grey")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_live_plot(settings: Settings, registry, model: str, version: int, log=print) -> bool:
    """The live plot, logged under ``live/`` to the MLflow run of ``version``: with each
    champion move (a promotion, a forced one, an automatic rollback). Never raises: a plot
    must not fail the decision it illustrates (a failure is reported through ``log``)."""

    ledger = LiveLedger.of(settings, readonly=True)
    try:
        spec = spec_for(settings, registry.models.info(model).task)
        entries = history.entries(settings.state_dir, model)
        with tempfile.TemporaryDirectory() as tmp:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            path = plot_live(ledger, entries, model, spec, Path(tmp) / f"live_{spec.live_metric}_{stamp}.png")
            run_id = registry.client.get_model_version(model, str(version)).run_id
            registry.client.log_artifact(run_id, str(path), "live")
        return True
    except Exception as exc:  # noqa: BLE001 - reported; the decision stands without its plot
        log(f"live plot for {model} v{version} not logged: {type(exc).__name__}: {exc}")
        return False
    finally:
        ledger.close()
