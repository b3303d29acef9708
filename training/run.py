"""Bootstrap a model and train a candidate: the functions the CLI, cron and Airflow call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError
from training.data import load_labelled, split_by_hash, stratified_sample
from training.model_store import ModelInfo, ModelStore
from training.tasks import TaskAdapter, get_adapter


def adapter_for(settings, task: str) -> TaskAdapter:
    return get_adapter(task, base_model=settings.training.base_model, max_length=settings.training.max_length)


@dataclass
class TrainRun:
    """A trained candidate: its version, directory, evaluation report and data lineage."""

    model: str
    version: int
    path: Path
    report: dict
    lineage: dict
    gate: dict
    fit: dict
    champion: int | None


def bootstrap(
    settings,
    name: str,
    task: str,
    data,
    labels: list[str] | None = None,
    golden=None,
    adapter: TaskAdapter | None = None,
    progress: bool = True,
) -> TrainRun:
    """Train version 1 of a new model from a labelled DataFrame (or file) and fix its golden set.

    The golden set is ``golden`` (DataFrame or file) or a stratified share of ``data`` by
    hash. Version 1 is judged by the registry against configured floors; here it is trained
    and evaluated on the golden set and the old-data holdout.
    """
    from training.evaluate import evaluate, save_report
    from training.gate import check_batch
    from training.trainer import fit, load_adapter_model, result_dict

    cfg = settings.training
    frame = load_labelled(data) if isinstance(data, str | Path) else data.copy()
    if "confidence" not in frame:
        frame["confidence"] = 1.0
    labels = labels or sorted(frame["label"].unique())
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise FlywheelError(f"labels {unknown} in the data are not in the given label set {labels}")
    if golden is None:
        rest, _, golden = split_by_hash(frame, cfg.golden_fraction, 0.0, salt="golden:")
    else:
        golden = load_labelled(golden) if isinstance(golden, str | Path) else golden
        rest = frame[~frame["sample_id"].isin(golden["sample_id"])]
    golden = golden.reset_index(drop=True)
    models = ModelStore(settings.state_dir)
    adapter = adapter or adapter_for(settings, task)
    info = ModelInfo(
        name=name, task=task, labels=list(labels), base_model=str(getattr(adapter, "base_model", ""))
    )
    models.create(info, golden[["sample_id", "text", "label"]], rest)
    version, folder = models.new_version(name)

    train, val, old_holdout = split_by_hash(rest, cfg.holdout_fraction, cfg.validation_fraction)
    gate = check_batch(train, labels, cfg.gate, folder)
    result = fit(adapter, labels, train, val, cfg, folder, progress=progress)
    model = load_adapter_model(adapter, labels, folder)
    holdouts = {"golden": golden, "old": stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed)}
    report = evaluate(adapter, labels, {"candidate": model}, holdouts, cfg.eval_batch_size)
    report["model"], report["version"] = name, version
    save_report(report, folder)
    cut = datetime.now(UTC)
    lineage = {
        "window_start": None,
        "window_end": cut.isoformat(),
        "new_samples": len(rest),
        "new_train": len(train),
        "replay": 0,
        "validation": len(val),
        "golden": len(golden),
        "old_holdout": len(holdouts["old"]),
        "bootstrap": True,
    }
    (folder / "data.json").write_text(json.dumps(lineage, indent=2))
    models.update_state(name, candidate=version, watermark=cut.isoformat())
    return TrainRun(name, version, folder, report, lineage, gate.to_dict(), result_dict(result), None)


def train(
    settings,
    name: str,
    feast_store=None,
    cut: datetime | None = None,
    adapter: TaskAdapter | None = None,
    progress: bool = True,
) -> TrainRun:
    """dataset (Feast window + replay) → GE gate → LoRA + distillation → evaluate vs champion.

    Does not move the watermark or the champion: the registry step does, when the run completes.
    """
    from training.dataset import build_dataset
    from training.evaluate import evaluate, save_report
    from training.gate import GateFailed, check_batch
    from training.trainer import fit, load_adapter_model, result_dict

    cfg = settings.training
    models = ModelStore(settings.state_dir)
    info = models.info(name)
    champion = models.champion(name)
    if champion is None:
        raise FlywheelError(
            f"model {name!r} has no champion yet; register and promote its first version "
            "(`flywheel bootstrap` does) before training a candidate"
        )
    if feast_store is None:
        from feature_repo.store import open_store

        feast_store = open_store(settings)
    cut = cut or datetime.now(UTC)
    data = build_dataset(settings, models, feast_store, name, cut)
    version, folder = models.new_version(name)
    (folder / "data.json").write_text(json.dumps(data.lineage(), indent=2))
    try:
        gate = check_batch(data.train, info.labels, cfg.gate, folder)
    except GateFailed:
        models.update_state(name, last_failed=version)
        raise
    adapter = adapter or adapter_for(settings, info.task)
    champion_dir = models.version_dir(name, champion)
    result = fit(adapter, info.labels, data.train, data.validation, cfg, folder, champion_dir, progress)
    candidate = load_adapter_model(adapter, info.labels, folder)
    teacher = load_adapter_model(adapter, info.labels, champion_dir)
    report = evaluate(
        adapter,
        info.labels,
        {"champion": teacher, "candidate": candidate},
        data.holdouts,
        cfg.eval_batch_size,
    )
    report.update(model=name, version=version, champion_version=champion)
    save_report(report, folder)
    models.update_state(name, candidate=version)
    return TrainRun(
        name, version, folder, report, data.lineage(), gate.to_dict(), result_dict(result), champion
    )
