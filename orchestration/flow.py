"""The retrain flow: one sequence of steps that the CLI, cron, ``flywheel run`` and Airflow call.

    repair → readiness → dataset → data gate → label screen → fit → evaluate → register → decide

:func:`retrain` holds the model's retrain lock for the whole sequence, so concurrent
triggers (two DAG runs, a DAG run and cron) give one retrain; the others report busy. The
training watermark advances only when a run is decided (the registry's last step) or its
window is refused by the data gate, so a failed or stopped run retries the same data next
time. A stop request (SIGTERM to ``flywheel run``) is honoured between steps and between
training steps; once a version is registered its decision always runs to the end.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_repo.definitions import CREATED
from feature_repo.store import open_store, sample_entities
from flywheel.errors import FlywheelError
from flywheel.faults import crash_point
from flywheel.layout import StateLayout
from flywheel.locks import LockBusy, file_lock
from flywheel.tasks import spec_for
from orchestration import history
from orchestration.registration import register
from orchestration.registry import Registry
from pipelines.review import queue_flagged
from training.data_gate import DataRejected
from training.label_screen import LabelsSuspect, screen_run
from training.model_store import ModelStore, Window
from training.run import bootstrap, evaluate_run, fit_run, prepare, screen
from training.trainer import Stopped, version_roles

if TYPE_CHECKING:
    from flywheel.settings import Settings

if TYPE_CHECKING:
    from flywheel.settings import Settings
    from orchestration.registry import Registry
    from training.data_gate import Quarantine
    from training.evaluate import EvalReport
    from training.run import TrainedRun
    from training.version import Lineage

# Exit codes of `flywheel model retrain` (documented in docs/operations.md).
EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_BUSY, EXIT_DATA_REJECTED = 0, 10, 11, 12, 13
STATUS_EXIT = {
    "promoted": EXIT_OK,
    "not-ready": EXIT_OK,
    "rejected": EXIT_REJECTED,
    "busy": EXIT_BUSY,
    "data-rejected": EXIT_DATA_REJECTED,
}


@dataclass
class Readiness:
    model: str
    new_samples: int
    per_class: dict[str, int]
    threshold: int
    min_per_class: int
    watermark: datetime | None

    @property
    def ready(self) -> bool:
        """Enough new samples, and (per_class holds every label) each label has its minimum."""
        per_class_ok = all(n >= self.min_per_class for n in self.per_class.values())
        return self.new_samples >= self.threshold and per_class_ok


def retrain_threshold(settings: Settings, spec) -> int:
    """New samples that trigger a retrain: the setting, or the task's default when unset."""
    return settings.training.min_new_samples or spec.default_min_new_samples


def readiness(settings: Settings, model: str) -> Readiness:
    """New labelled samples of ``model`` ingested since its watermark, counted in Feast's
    offline files (the same samples the dataset builder retrieves, without the join)."""

    models = ModelStore(settings.state_dir)
    info = models.info(model)
    spec = spec_for(settings, info.task)
    watermark = models.watermark(model)
    rows = sample_entities(
        settings, model, watermark, datetime.now(UTC), window_on=CREATED, columns=tuple(spec.sample_columns)
    )
    new = rows[spec.is_sample(rows)]
    return Readiness(
        model,
        len(new),
        spec.class_counts(new, info.labels),
        retrain_threshold(settings, spec),
        settings.training.min_new_per_class,
        watermark,
    )


@dataclass
class Outcome:
    model: str
    status: str  # promoted | rejected | stale | not-ready | data-rejected | busy | stopped | failed
    version: int | None = None  # the version number (MLflow's and the folder's)
    reasons: list[str] = field(default_factory=list)
    report: EvalReport | None = None
    lineage: Lineage | None = None
    quarantine: Quarantine | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step that ran, in order

    @property
    def exit_code(self) -> int:
        return STATUS_EXIT.get(self.status, EXIT_FAILED)


class Stop(Exception):
    pass


@dataclass
class Retrain:
    """One retrain's context, passed through the steps."""

    settings: Settings
    model: str
    if_ready: bool = True
    progress: bool = True
    cut: datetime | None = None
    feast_store: Any = None  # feast.FeatureStore, opened by the dataset step unless given
    stop: threading.Event | None = None
    log: Callable[[str], None] = lambda message: None
    registry: Registry | None = None
    run: TrainedRun | None = None
    version: int | None = None
    outcome: Outcome | None = None
    step: str | None = None  # the step running now
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step that ran
    from_base: bool = False  # every sample still held, fitted from the base model (after an erasure)

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    @property
    def trained(self) -> TrainedRun:
        """The run the dataset step prepared; every later step needs it."""
        if self.run is None:
            raise RuntimeError(f"{self.model}: the {self.step} step ran before the dataset step")
        return self.run

    @property
    def registered(self) -> tuple[Registry, int]:
        """The registry (opened by the repair step) and the version the register step made."""
        if self.registry is None or self.version is None:
            raise RuntimeError(f"{self.model}: the {self.step} step ran before repair and register")
        return self.registry, self.version


def step_repair(r: Retrain) -> None:
    r.registry = Registry(r.settings)
    for version, what in r.registry.repair(r.model):
        r.log(f"{r.model} v{version}: repaired ({what})")


def step_readiness(r: Retrain) -> None:
    if not r.if_ready or r.from_base:
        return
    ready = readiness(r.settings, r.model)
    if not ready.ready:
        reason = f"{ready.new_samples} new labelled samples of {ready.threshold} needed ({ready.per_class})"
        r.outcome = Outcome(r.model, "not-ready", reasons=[reason])


def step_dataset(r: Retrain) -> None:
    if r.feast_store is None:
        r.feast_store = open_store(r.settings)
    r.cut = r.cut or datetime.now(UTC)
    r.run = prepare(r.settings, r.model, r.feast_store, r.cut, from_base=r.from_base)


def _refuse_window(r: Retrain, reasons: tuple[str, ...], by: str, quarantine) -> None:
    """The window is refused before fitting (by the data gate or the label screen): consumed
    and never replayed (the model's state), in the history, and the run's outcome."""

    lineage = r.trained.lineage
    models = ModelStore(r.settings.state_dir)
    models.record_data_rejected(r.model, Window(lineage.window_start, lineage.window_end, reasons))
    history.record(
        r.settings.state_dir,
        r.model,
        "data-rejected",
        champion=models.champion(r.model),
        reason="; ".join(reasons),
        window={"start": lineage.window_start, "end": lineage.window_end},
    )
    r.outcome = Outcome(
        r.model,
        "data-rejected",
        reasons=[f"the {by} refused the window before fitting; it is not replayed: {'; '.join(reasons)}"],
        lineage=lineage,
        quarantine=quarantine,
    )


def step_data_gate(r: Retrain) -> None:
    try:
        screen(r.settings, r.trained)
    except DataRejected as exc:
        reasons = tuple(f"data_gate: {reason}" for reason in exc.report.reasons)
        _refuse_window(r, reasons, "data gate", exc.report.quarantine)


def step_label_screen(r: Retrain) -> None:
    run = r.trained
    try:
        report = run.label_screen = screen_run(r.settings, run, to_review=queue_flagged)
    except LabelsSuspect as exc:
        quarantine = run.data_gate.quarantine if run.data_gate else None
        _refuse_window(r, (exc.report.reason(),), "label screen", quarantine)
        return
    if report.flagged:
        r.log(f"{r.model}: {report.flagged} of {report.screened} labels flagged and sent to review")


def step_fit(r: Retrain) -> None:
    try:
        fit_run(r.settings, r.trained, progress=r.progress, should_stop=r.stopping)
    except Stopped as exc:
        raise Stop(str(exc)) from exc


def step_evaluate(r: Retrain) -> None:
    evaluate_run(r.settings, r.trained)


def step_register(r: Retrain) -> None:
    if r.registry is None:
        raise RuntimeError(f"{r.model}: the register step ran before repair opened the registry")
    r.version = register(r.registry, r.trained)


def step_decide(r: Retrain) -> None:
    registry, version = r.registered
    run = r.trained
    verdict = registry.decide(r.model, version, review_files(r.settings, run))
    gate = run.data_gate
    r.outcome = Outcome(
        r.model,
        verdict.label,
        version,
        verdict.explanation,
        run.report,
        run.lineage,
        gate.quarantine if gate is not None else None,
    )


STEPS: list[tuple[str, Callable[[Retrain], None]]] = [
    ("repair", step_repair),
    ("readiness", step_readiness),
    ("dataset", step_dataset),
    ("data_gate", step_data_gate),
    ("label_screen", step_label_screen),
    ("fit", step_fit),
    ("evaluate", step_evaluate),
    ("register", step_register),
    ("decide", step_decide),
]
UNSTOPPABLE = {"decide"}  # a registered version is always decided


def run_steps(r: Retrain, steps=STEPS) -> Outcome:
    """Run ``steps`` in order until one gives an outcome; a stop request ends the flow at the
    next step boundary (except before ``decide``)."""
    for name, step in steps:
        if r.stopping() and name not in UNSTOPPABLE:
            raise Stop(f"stopped before the {name} step")
        r.log(f"{r.model}: {name}")
        r.step = name
        started = time.perf_counter()
        step(r)
        r.timings[name] = round(time.perf_counter() - started, 3)
        crash_point(f"retrain.{name}")
        if r.outcome is not None:
            r.outcome.timings = {**(r.run.timings if r.run is not None else {}), **r.timings}
            return r.outcome
    raise FlywheelError("the retrain flow ended without an outcome")  # a bug, not a user error


def retrain(
    settings,
    model: str,
    if_ready: bool = True,
    feast_store=None,
    progress: bool = True,
    cut: datetime | None = None,
    wait_for_lock: bool = False,
    stop: threading.Event | None = None,
    log: Callable[[str], None] | None = None,
    from_base: bool = False,
) -> Outcome:
    """One retrain of ``model`` (skipped when not ready). Concurrent calls: one runs, others are busy.
    ``from_base``: on every sample still held, from the base model (``flywheel forget --retrain``)."""

    r = Retrain(settings, model, if_ready, progress, cut, feast_store, stop, log or (lambda m: None))
    r.from_base = from_base
    with contextlib.ExitStack() as held:
        try:  # busy means this lock only (an alias lock held too long is a failure, below)
            held.enter_context(
                file_lock(StateLayout.of(settings).retrain_lock(model), 3600 if wait_for_lock else 0.5)
            )
        except LockBusy:
            return Outcome(model, "busy", reasons=["another retrain of this model is running"])
        try:
            return run_steps(r)
        except Stop as exc:
            return Outcome(model, "stopped", reasons=[f"{exc}; the window is retried next time"])
        except FlywheelError as exc:
            return Outcome(model, "failed", reasons=[str(exc)])
        except Exception as exc:  # noqa: BLE001 - any failure is this run's outcome, never the caller's crash
            where = f" in the {r.step} step" if r.step else ""
            return Outcome(model, "failed", reasons=[f"{type(exc).__name__}{where}: {exc}"])


def review_files(settings: Settings, run) -> list[Path]:
    """The task's review artifacts (plots, examples) and the report, beside the version."""

    models = ModelStore(settings.state_dir)
    info = models.info(run.model)
    folder = run.folder.review_dir()
    spec = spec_for(settings, info.task)
    champion_dir = models.version_dir(run.model, run.champion) if run.champion else None
    roles = version_roles(spec, info.labels, run.path, champion_dir)
    files = spec.review_artifacts(run.report, roles, models.golden(run.model), folder)
    screen = run.label_screen
    files += [
        folder / name
        for name in (screen.artifacts if screen is not None else [])
        if (folder / name).is_file()
    ]
    (folder / "eval.json").write_text(json.dumps(run.report.to_dict(), indent=2, default=str))
    return [*files, folder / "eval.json"]


def bootstrap_model(
    settings, name: str, task: str, data, labels=None, golden=None, progress: bool = True
) -> Outcome:
    """Train the first version from labelled data, register it and judge it against the floors."""

    try:
        with file_lock(StateLayout.of(settings).retrain_lock(name), timeout_s=0.5):
            registry = Registry(settings)
            if ModelStore(settings.state_dir).exists(name):
                registry.repair(name)  # a bootstrap a crash interrupted may still be decided
            run = bootstrap(settings, name, task, data, labels, golden, progress=progress)
            version = register(registry, run)
            verdict = registry.decide(name, version, review_files(settings, run))
    except LockBusy:
        return Outcome(name, "busy", reasons=["another bootstrap or retrain of this model is running"])
    except DataRejected as exc:
        return Outcome(name, "data-rejected", reasons=exc.report.reasons, quarantine=exc.report.quarantine)
    quarantine = run.data_gate.quarantine if run.data_gate is not None else None
    return Outcome(name, verdict.label, version, verdict.explanation, run.report, run.lineage, quarantine)
