"""The training steps of a run, as the retrain flow (orchestration.flow) and bootstrap call them.

    retrain:   prepare (dataset) → screen (data gate) → label screen → fit → evaluate_run
    bootstrap: one function over labelled data given by the user

Each step takes and returns a :class:`TrainedRun`, whose folder (``training.version``) holds
what the steps wrote; the registry takes the whole object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from feature_repo.store import open_store
from flywheel.errors import FlywheelError
from flywheel.tasks import TaskSpec, spec_for
from training.data import split_by_hash, stratified_sample, stratified_share
from training.data_gate import DataGateReport, DataRejected, check_batch, quarantine
from training.dataset import build_dataset, build_full_dataset
from training.evaluate import EvalReport, evaluate
from training.label_screen import screen_run
from training.model_store import ModelInfo, ModelStore
from training.screen_report import LabelScreenReport
from training.trainer import FitResult, fit, version_roles
from training.version import Lineage, VersionFolder

if TYPE_CHECKING:
    from flywheel.settings import Settings


def teacher_dir(models: ModelStore, run: TrainedRun) -> Path | None:
    """The folder the student starts from and distils (the champion's; none from the base)."""
    return None if run.lineage.from_base else champion_dir(models, run)


def champion_dir(models: ModelStore, run: TrainedRun) -> Path | None:
    """The folder of the champion ``run`` is trained from and compared with (None for a first version)."""
    return None if run.champion is None else models.version_dir(run.model, run.champion)


@dataclass
class TrainedRun:
    """A run of a model: its folder and what its steps produced (None until they ran)."""

    model: str
    folder: VersionFolder
    lineage: Lineage
    champion: int | None  # the teacher and the version it is compared against
    data_gate: DataGateReport | None = None
    fit: FitResult | None = None
    report: EvalReport | None = None
    label_screen: LabelScreenReport | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds of the fit's and evaluation's phases

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def evaluated(self) -> EvalReport:
        """The evaluation report; a run is registered only once it has one."""
        if self.report is None:
            raise FlywheelError(f"{self.model} run {self.folder.run_id} has no evaluation report yet")
        return self.report


def bootstrap(
    settings,
    name: str,
    task: str,
    data,
    labels: list[str] | None = None,
    golden=None,
    spec: TaskSpec | None = None,
    progress: bool = True,
) -> TrainedRun:
    """Train the first version of a new model from a labelled DataFrame (or file); fix its golden set.

    The golden set is ``golden`` (DataFrame or file) or a stratified share of ``data`` by
    hash. Samples the data gate judges one by one (too long, no label...) are quarantined;
    a batch that fails as a whole raises DataRejected. The registry judges the version
    against the configured floors and the baseline.
    """

    cfg = settings.training
    spec = spec or spec_for(settings, task)
    frame = spec.load_samples(data)
    if "confidence" not in frame:
        frame["confidence"] = 1.0
    labels = labels or spec.labels_of(frame)
    frame, held = quarantine(frame, labels, cfg.data_gate, spec)
    if golden is None:
        rest, golden = stratified_share(frame, cfg.golden_fraction, salt="golden:", column=spec.strata)
    else:
        golden = spec.load_samples(golden)
        golden, held_golden = quarantine(golden.assign(confidence=1.0), labels, cfg.data_gate, spec)
        held = held.add(held_golden)
        rest = frame[~frame["sample_id"].isin(golden["sample_id"])]
    golden = golden.reset_index(drop=True)
    train, val, old_holdout = split_by_hash(rest, cfg.holdout_fraction, cfg.validation_fraction)
    train, gate = check_batch(train, labels, cfg.data_gate, spec)
    gate.quarantine = held.add(gate.quarantine)
    if not gate.success:
        raise DataRejected(gate)
    cut = datetime.now(UTC)
    models = ModelStore(settings.state_dir)
    info = ModelInfo(
        name=name, task=task, labels=list(labels), base_model=str(getattr(spec, "base_model", ""))
    )
    models.create(info, golden[["sample_id", *spec.sample_columns]], rest, watermark=cut)
    folder = models.new_run(name)
    folder.save_data_gate(gate)
    old = stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed, column=spec.strata)
    holdouts = {"golden": golden, "old": old}
    lineage = Lineage(
        window_start=None,
        window_end=cut.isoformat(),
        new_samples=len(rest),
        new_train=len(train),
        validation=len(val),
        golden=len(golden),
        old_holdout=len(holdouts["old"]),
        quarantined=gate.quarantine.rows,
        bootstrap=True,
    )
    folder.save_lineage(lineage)
    folder.save_dataset(train, val, holdouts)  # and with it the per-record lineage
    run = TrainedRun(name, folder, lineage, None, data_gate=gate)
    run.fit = fit(spec, labels, train, val, cfg, folder, progress=progress)
    roles = version_roles(spec, labels, folder.path)
    run.report = evaluate(spec, labels, roles, holdouts, cfg.eval_batch_size)
    run.report.model = name
    folder.save_report(run.report)
    return run


def prepare(
    settings, name: str, feast_store=None, cut: datetime | None = None, from_base: bool = False
) -> TrainedRun:
    """The dataset step: the new window since the watermark (up to ``cut``), replay and holdouts,
    saved in a new run folder. Raises NoNewData when the window is empty. ``from_base``: every
    sample still held instead (``training.dataset.build_full_dataset``), for a fit from the base
    model with no teacher, so that nothing erased reaches the new version through its teacher."""

    models = ModelStore(settings.state_dir)
    champion = models.champion(name)
    if champion is None:
        raise FlywheelError(
            f"model {name!r} has no champion yet; bootstrap it (`flywheel model bootstrap`) "
            "before training a candidate"
        )
    if feast_store is None:
        feast_store = open_store(settings)
    build = build_full_dataset if from_base else build_dataset
    data = build(settings, models, feast_store, name, cut or datetime.now(UTC))
    folder = models.new_run(name)
    folder.save_dataset(data.train, data.validation, data.holdouts)
    lineage = Lineage(**data.lineage(), champion=champion, from_base=from_base)
    folder.save_lineage(lineage)
    return TrainedRun(name, folder, lineage, champion)


def screen(settings: Settings, run: TrainedRun) -> TrainedRun:
    """The data gate step: quarantine the samples it judges one by one (out of training and of
    the new holdout), then validate the training batch. Raises DataRejected for the batch."""

    gate_cfg = settings.training.data_gate
    info = ModelStore(settings.state_dir).info(run.model)
    labels, spec = info.labels, spec_for(settings, info.task)
    train, validation, holdouts = run.folder.dataset()
    validation, held_val = quarantine(validation, labels, gate_cfg, spec)
    new_holdout, held_new = quarantine(holdouts["new"], labels, gate_cfg, spec)
    train, report = check_batch(train, labels, gate_cfg, spec)
    report.quarantine = report.quarantine.add(held_val).add(held_new)
    run.folder.save_data_gate(report)
    run.data_gate = report
    run.folder.save_dataset(train, validation, {**holdouts, "new": new_holdout})
    run.lineage.quarantined = report.quarantine.rows
    run.lineage.new_train, run.lineage.validation = int((train["origin"] == "new").sum()), len(validation)
    run.lineage.new_holdout = len(new_holdout)
    run.folder.save_lineage(run.lineage)
    if run.lineage.new_train == 0:  # replay alone would train, and consume the window
        report.refuse("new samples left to train on after quarantine", report.quarantine.rows)
        run.folder.save_data_gate(report)
    if not report.success:
        raise DataRejected(report)
    return run


def fit_run(
    settings, run: TrainedRun, spec: TaskSpec | None = None, progress: bool = True, should_stop=None
) -> TrainedRun:
    """The fit step: the student starts from the champion, which is also the teacher."""

    models = ModelStore(settings.state_dir)
    info = models.info(run.model)
    train, validation, _ = run.folder.dataset()
    spec = spec or spec_for(settings, info.task)
    run.fit = fit(
        spec,
        info.labels,
        train,
        validation,
        settings.training,
        run.folder,
        teacher_dir(models, run),
        progress,
        should_stop=should_stop,
    )
    run.timings.update({f"fit.{k}": v for k, v in run.fit.phases.items()})
    return run


def evaluate_run(settings: Settings, run: TrainedRun, spec: TaskSpec | None = None) -> TrainedRun:
    """The evaluate step: baseline, champion and candidate on the same holdouts; eval.json."""

    models = ModelStore(settings.state_dir)
    info = models.info(run.model)
    spec = spec or spec_for(settings, info.task)
    _, _, holdouts = run.folder.dataset()
    roles = version_roles(spec, info.labels, run.path, champion_dir(models, run))
    timings: dict[str, float] = {}
    run.report = evaluate(spec, info.labels, roles, holdouts, settings.training.eval_batch_size, timings)
    run.timings.update({f"evaluate.{k}": v for k, v in timings.items()})
    run.report.model, run.report.champion_version = run.model, run.champion
    run.folder.save_report(run.report)
    return run


def load_run(folder: VersionFolder, model: str) -> TrainedRun:
    """A run already prepared, screened and evaluated, read back from its folder."""
    lineage = folder.lineage()
    run = TrainedRun(model, folder, lineage, lineage.champion, data_gate=folder.data_gate())
    run.label_screen = folder.label_screen()
    run.report = folder.report() if folder.has_report() else None
    return run


def train(
    settings,
    name: str,
    feast_store=None,
    cut: datetime | None = None,
    spec: TaskSpec | None = None,
    progress: bool = True,
) -> TrainedRun:
    """dataset → data gate → label screen → LoRA + distillation → evaluate vs champion
    (`flywheel model train`).

    Trains a candidate only: registering and deciding are the registry's (``flywheel model retrain``).
    """

    run = prepare(settings, name, feast_store, cut)
    screen(settings, run)
    run.label_screen = screen_run(settings, run)
    fit_run(settings, run, spec, progress)
    return evaluate_run(settings, run, spec)
