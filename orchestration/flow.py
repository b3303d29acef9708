"""The retrain flow, as one set of functions for the CLI, cron, ``flywheel run`` and Airflow.

    ready? → dataset → GE gate → train → evaluate → register → gate → promote / reject

A per-model lock makes concurrent triggers run one retrain; the training watermark
advances only when a run completes (registered and decided), so a failed run retries the
same data next time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError

# Exit codes of `flywheel retrain` (documented in the README).
EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_BUSY = 0, 10, 11, 12


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


def readiness(settings, model: str) -> Readiness:
    """New labelled samples of ``model`` ingested since its watermark, counted in Feast's
    offline files (the same samples the dataset builder retrieves, without the join)."""
    from feature_repo.definitions import CREATED
    from feature_repo.store import sample_entities
    from training.model_store import ModelStore

    models = ModelStore(settings.state_dir)
    info = models.info(model)
    watermark = models.watermark(model)
    rows = sample_entities(
        settings, model, watermark, datetime.now(UTC), window_on=CREATED, columns=("label", "text")
    )
    new = rows[rows["label"].notna() & rows["text"].notna()]
    counts = new["label"].value_counts()
    return Readiness(
        model,
        len(new),
        {label: int(counts.get(label, 0)) for label in info.labels},
        settings.training.min_new_samples,
        settings.training.min_new_per_class,
        watermark,
    )


@dataclass
class Outcome:
    model: str
    status: str  # promoted | rejected | not-ready | failed
    version: int | None = None  # MLflow version
    local_version: int | None = None
    reasons: list[str] = field(default_factory=list)
    report: dict | None = None
    lineage: dict | None = None

    @property
    def exit_code(self) -> int:
        codes = {"promoted": EXIT_OK, "not-ready": EXIT_OK, "rejected": EXIT_REJECTED, "busy": EXIT_BUSY}
        return codes.get(self.status, EXIT_FAILED)


def review_files(settings, run) -> list[Path]:
    """Confusion-matrix PNG, misclassified golden examples and the report, beside the version."""
    import json

    from orchestration.review_note import confusion_png, misclassified
    from training.model_store import ModelStore
    from training.run import adapter_for
    from training.trainer import load_adapter_model

    models = ModelStore(settings.state_dir)
    info = models.info(run.model)
    folder = run.path / "review"
    folder.mkdir(exist_ok=True)
    files = []
    png = confusion_png(run.report, folder / "confusion_golden.png")
    if png:
        files.append(png)
    adapter = adapter_for(settings, info.task)
    model = load_adapter_model(adapter, info.labels, run.path)
    (folder / "misclassified.md").write_text(
        misclassified(adapter, info.labels, model, models.golden(run.model))
    )
    (folder / "eval.json").write_text(json.dumps(run.report, indent=2, default=str))
    files += [folder / "misclassified.md", folder / "eval.json"]
    return files


def register_and_gate(settings, run, registry=None) -> Outcome:
    from orchestration.registry import Registry

    registry = registry or Registry(settings)
    version = registry.register(run)
    verdict = registry.decide(
        run.model, version, run.report, run.lineage, run.gate, review_files(settings, run)
    )
    reasons = verdict.reasons or [c["reason"] for c in verdict.checks]  # why it failed, or what passed
    return Outcome(run.model, verdict.label, version, run.version, reasons, run.report, run.lineage)


def complete_run(settings, run, cut: datetime, registry=None) -> Outcome:
    """Register and gate a trained candidate, then advance the watermark to the run's cut."""
    from training.model_store import ModelStore

    outcome = register_and_gate(settings, run, registry)
    models = ModelStore(settings.state_dir)
    changes = {"watermark": cut.isoformat()}  # the run completed: its window is consumed
    if outcome.status == "rejected":
        # A rejected window's samples are never replayed into later training.
        windows = models.state(run.model).get("rejected_windows", [])
        changes["rejected_windows"] = [*windows, [run.lineage.get("window_start"), run.lineage["window_end"]]]
    models.update_state(run.model, **changes)
    return outcome


def bootstrap_model(
    settings, name: str, task: str, data, labels=None, golden=None, progress: bool = True
) -> Outcome:
    """Train version 1 from labelled data, register it and judge it against the floors."""
    from training.run import bootstrap

    run = bootstrap(settings, name, task, data, labels, golden, progress=progress)
    return register_and_gate(settings, run)


def retrain(
    settings,
    model: str,
    if_ready: bool = True,
    feast_store=None,
    progress: bool = True,
    cut: datetime | None = None,
    wait_for_lock: bool = False,
) -> Outcome:
    """One retrain of ``model`` (skipped when not ready). Concurrent calls: one runs, others are busy."""
    from orchestration.registry import LockBusy, model_lock
    from training.run import train

    try:
        with model_lock(settings.state_dir, f"{model}.retrain", timeout_s=3600 if wait_for_lock else 0.5):
            from orchestration.registry import Registry

            registry = Registry(settings)
            registry.repair(model)  # finish the decision of a run a crash left pending
            if feast_store is None:
                from feature_repo.store import open_store

                feast_store = open_store(settings)
            if if_ready:
                r = readiness(settings, model)
                if not r.ready:
                    return Outcome(
                        model,
                        "not-ready",
                        reasons=[
                            f"{r.new_samples} new labelled samples of {r.threshold} needed ({r.per_class})"
                        ],
                    )
            cut = cut or datetime.now(UTC)
            run = train(settings, model, feast_store, cut=cut, progress=progress)
            return complete_run(settings, run, cut, registry)
    except LockBusy:
        return Outcome(model, "busy", reasons=["another retrain of this model is running"])
    except FlywheelError as exc:
        return Outcome(model, "failed", reasons=[str(exc)])
