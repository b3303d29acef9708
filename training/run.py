"""Bootstrap a model and train a candidate: the functions the CLI, cron and Airflow call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError
from training.data import load_labelled, split_by_hash, stratified_sample, stratified_share
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
    from training.evaluate import evaluate, save_report, version_roles
    from training.gate import check_batch
    from training.trainer import fit, result_dict

    cfg = settings.training
    frame = load_labelled(data) if isinstance(data, str | Path) else data.copy()
    if "confidence" not in frame:
        frame["confidence"] = 1.0
    labels = labels or sorted(frame["label"].unique())
    unknown = sorted(set(frame["label"]) - set(labels))
    if unknown:
        raise FlywheelError(f"labels {unknown} in the data are not in the given label set {labels}")
    if golden is None:
        rest, golden = stratified_share(frame, cfg.golden_fraction, salt="golden:")
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
    roles = version_roles(adapter, labels, folder)
    holdouts = {"golden": golden, "old": stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed)}
    report = evaluate(adapter, labels, roles, holdouts, cfg.eval_batch_size)
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


def prepare(settings, name: str, feast_store=None, cut: datetime | None = None) -> int:
    """Build the dataset of a new candidate version and run the GE gate on it.

    Writes ``data/*.parquet`` and ``data.json`` (and ``gate.json``) into the version's
    folder and returns the version number; raises GateFailed / NoNewData.
    """
    from training.dataset import build_dataset
    from training.gate import GateFailed, check_batch

    models = ModelStore(settings.state_dir)
    info = models.info(name)
    if models.champion(name) is None:
        raise FlywheelError(
            f"model {name!r} has no champion yet; bootstrap it (`flywheel bootstrap`) "
            "before training a candidate"
        )
    if feast_store is None:
        from feature_repo.store import open_store

        feast_store = open_store(settings)
    data = build_dataset(settings, models, feast_store, name, cut or datetime.now(UTC))
    version, folder = models.new_version(name)
    (folder / "data").mkdir()
    data.train.to_parquet(folder / "data" / "train.parquet", index=False)
    data.validation.to_parquet(folder / "data" / "validation.parquet", index=False)
    for key, frame in data.holdouts.items():
        frame.to_parquet(folder / "data" / f"holdout_{key}.parquet", index=False)
    lineage = {**data.lineage(), "champion": models.champion(name)}
    (folder / "data.json").write_text(json.dumps(lineage, indent=2))
    try:
        check_batch(data.train, info.labels, settings.training.gate, folder)
    except GateFailed:
        models.update_state(name, last_failed=version)
        raise
    return version


def fit_version(settings, name: str, version: int, adapter: TaskAdapter | None = None, progress: bool = True):
    """Train a prepared version: the student starts from the champion, which is also the teacher."""
    import pandas as pd

    from training.trainer import fit

    models = ModelStore(settings.state_dir)
    info = models.info(name)
    folder = models.version_dir(name, version)
    champion = json.loads((folder / "data.json").read_text())["champion"]
    adapter = adapter or adapter_for(settings, info.task)
    return fit(
        adapter,
        info.labels,
        pd.read_parquet(folder / "data" / "train.parquet"),
        pd.read_parquet(folder / "data" / "validation.parquet"),
        settings.training,
        folder,
        models.version_dir(name, champion),
        progress,
    )


def evaluate_version(
    settings, name: str, version: int, adapter: TaskAdapter | None = None, fit_result=None
) -> TrainRun:
    """Evaluate a trained version and its champion on the same holdouts; write eval.json."""
    import pandas as pd

    from training.evaluate import evaluate, save_report, version_roles

    models = ModelStore(settings.state_dir)
    info = models.info(name)
    folder = models.version_dir(name, version)
    lineage = json.loads((folder / "data.json").read_text())
    champion = lineage.pop("champion")
    adapter = adapter or adapter_for(settings, info.task)
    holdouts = {
        k: pd.read_parquet(folder / "data" / f"holdout_{k}.parquet") for k in ("golden", "old", "new")
    }
    models_ = version_roles(adapter, info.labels, folder, models.version_dir(name, champion))
    report = evaluate(adapter, info.labels, models_, holdouts, settings.training.eval_batch_size)
    report.update(model=name, version=version, champion_version=champion)
    save_report(report, folder)
    models.update_state(name, candidate=version)
    gate = json.loads((folder / "gate.json").read_text())
    from training.trainer import result_dict

    fit = result_dict(fit_result) if fit_result is not None else {}
    return TrainRun(name, version, folder, report, lineage, gate, fit, champion)


def load_run(settings, name: str, version: int) -> TrainRun:
    """A version already prepared, trained and evaluated, read back from its folder."""
    models = ModelStore(settings.state_dir)
    folder = models.version_dir(name, version)
    report = json.loads((folder / "eval.json").read_text())
    lineage = json.loads((folder / "data.json").read_text())
    champion = lineage.pop("champion", None)
    gate = json.loads((folder / "gate.json").read_text())
    return TrainRun(name, version, folder, report, lineage, gate, {}, champion)


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
    version = prepare(settings, name, feast_store, cut)
    result = fit_version(settings, name, version, adapter, progress)
    return evaluate_version(settings, name, version, adapter, result)
