"""Registering a trained run as an MLflow model version.

Log the run (params, metrics, its records and per-record lineage) and its pyfunc model →
create the version *with* its tags (``flywheel.verdict=pending``, the run id, the champion
it was evaluated against, how many of its samples were erased since) in one call → move the
run's folder to ``versions/v<N>`` → alias ``candidate``. A crash before the version exists
leaves only an unregistered MLflow run (the window is retrained next time); after,
``Registry.repair`` finds the pending version and finishes it. Deciding is the registry's
alias state machine (``orchestration.registry``).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.faults import crash_point
from flywheel.privacy import Forgotten
from flywheel.tasks import spec_for
from orchestration.mlflow_store import CANDIDATE
from orchestration.registry import AGAINST, RUN_ID, TRAINED_ON_FORGOTTEN, VERDICT, Registry

if TYPE_CHECKING:
    from flywheel.settings import Settings


def code_revision() -> str:
    here = Path(__file__).parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5, cwd=here
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_params(run) -> dict[str, str]:
    record = run.folder.training_record()
    t = record.training
    keys = (
        "epochs",
        "min_steps",
        "batch_size",
        "max_length",
        "learning_rate",
        "head_learning_rate",
        "distill_alpha",
        "temperature",
        "replay_ratio",
        "seed",
    )
    params = {
        "task": record.task,
        "labels": ",".join(record.labels),
        "base_model": Path(record.base_model).name,
        "lora_r": t["lora"]["r"],
        "lora_alpha": t["lora"]["alpha"],
        "lora_dropout": t["lora"]["dropout"],
        **{k: t[k] for k in keys},
        "teacher_version": run.champion,
        "best_epoch": record.best_epoch,
        "steps": record.steps,
        "device": record.device,
        **{f"data.{k}": v for k, v in run.lineage.to_dict().items()},
    }
    return {k: str(v) for k, v in params.items()}


def trained_on_forgotten(settings: Settings, folder) -> int:
    """How many samples the run in ``folder`` trained or validated on were erased since."""
    lineage = folder.sample_lineage()
    if lineage is None:
        return 0
    forgotten = Forgotten.of(settings)
    try:
        return len(forgotten.which((i, None) for i in lineage.ids("train") | lineage.ids("validation")))
    finally:
        forgotten.close()


def experiment_id(settings: Settings, model: str) -> str:
    """The MLflow experiment of ``model`` (made on first use, its artifacts under the settings' location)."""
    import mlflow

    name = f"flywheel/{model}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{settings.mlflow_artifact_location.rstrip('/')}/{model}"
    return mlflow.create_experiment(name, artifact_location=location)


def register(registry: Registry, run) -> int:
    """Log ``run`` (a ``training.run.TrainedRun``) and its pyfunc model, create the MLflow
    version with its tags, move the run's folder to that version's; returns the number."""
    import mlflow

    from orchestration.serving import AdapterModel, serving_meta

    info = registry.models.info(run.model)
    record = run.folder.training_record()
    meta = serving_meta(spec_for(registry.settings, info.task), info.labels, record)
    revision = code_revision()
    with mlflow.start_run(
        experiment_id=experiment_id(registry.settings, run.model), run_name=f"{run.model}-{run.folder.run_id}"
    ):
        mlflow.log_params(run_params(run))
        mlflow.log_metrics(run.report.flat_metrics())
        mlflow.set_tags(
            {
                "flywheel.model": run.model,
                RUN_ID: run.folder.run_id,
                "flywheel.code_revision": revision,
                "flywheel.data_gate_success": str(run.data_gate.success),
            }
        )
        for path in run.folder.artifacts():
            mlflow.log_artifact(str(path), "run")
        with tempfile.TemporaryDirectory() as tmp:
            meta_path = Path(tmp) / "meta.json"
            meta_path.write_text(json.dumps(meta))
            adapter_dir = Path(tmp) / "adapter"
            adapter_dir.mkdir()
            for f in run.folder.adapter_files():
                (adapter_dir / f.name).write_bytes(f.read_bytes())
            logged = mlflow.pyfunc.log_model(
                name="model",
                python_model=AdapterModel(),
                artifacts={"adapter": str(adapter_dir), "meta": str(meta_path)},
                pip_requirements=["torch", "transformers", "peft", "pandas"],
            )
    crash_point("register.logged")
    lineage = run.lineage
    tags = {
        VERDICT: "pending",
        RUN_ID: run.folder.run_id,
        AGAINST: str(run.champion) if run.champion else "none",
        "flywheel.window_start": str(lineage.window_start),
        "flywheel.window_end": str(lineage.window_end),
        "flywheel.new_samples": str(lineage.new_samples),
        "flywheel.replayed_samples": str(lineage.replay),
        "flywheel.quarantined_samples": str(lineage.quarantined),
        "flywheel.data_gate_success": str(run.data_gate.success),
        "flywheel.code_revision": revision,
    }
    erased = trained_on_forgotten(registry.settings, run.folder)
    if erased:  # erased while this run trained (forget tags versions that exist; this one did not)
        tags[TRAINED_ON_FORGOTTEN] = str(erased)
    notices = io.StringIO()  # "Registered model ... already exists", "Created version"
    with contextlib.redirect_stderr(notices):
        created = mlflow.register_model(logged.model_uri, run.model, tags=tags)
    version = int(created.version)
    crash_point("register.created")
    run.folder = registry.models.adopt(run.model, run.folder.run_id, version)
    crash_point("register.adopted")
    registry.client.set_registered_model_alias(run.model, CANDIDATE, str(version))
    return version
