"""The MLflow registry: register candidates, gate them, move aliases, roll back, keep history.

Registered model = model name. Aliases: ``champion`` (serving), ``previous`` (the last
champion, the rollback target), ``candidate`` (the last trained). A version carries
params, the gate metrics, the data window and sample counts, the Great Expectations
result, the resolved config, the code revision, a review note and review artifacts.

Alias moves happen under a per-model file lock and are compare-and-set: a candidate is
promoted only if the champion is still the one it was evaluated against, so two
candidates finishing at once cannot both become champion. A version registered but not
yet decided (a crash between registration and the alias move) keeps the tag
``flywheel.verdict=pending``; :meth:`Registry.repair` finishes its decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.names import check_model_name
from orchestration import history
from orchestration.gate import Verdict, decide
from training.model_store import ModelStore

CHAMPION, PREVIOUS, CANDIDATE = "champion", "previous", "candidate"
VERDICT, LOCAL_VERSION, AGAINST = "flywheel.verdict", "flywheel.local_version", "flywheel.evaluated_against"


class RegistryError(FlywheelError):
    exit_code = 7


class LockBusy(RegistryError):
    """Another process holds the model's lock (a retrain or an alias move is under way)."""


def code_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextmanager
def model_lock(state_dir: Path, model: str, timeout_s: float = 600):
    """An exclusive lock per model across processes (retrains and alias moves)."""
    path = Path(state_dir) / "registry" / f"{check_model_name(model)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockBusy(f"{path} is held by another process for {timeout_s:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _flat_params(run) -> dict[str, str]:
    cfg = json.loads((run.path / "training_config.json").read_text())
    t = cfg["training"]
    params = {
        "task": cfg["task"],
        "labels": ",".join(cfg["labels"]),
        "base_model": Path(cfg["base_model"]).name,
        "lora_r": t["lora"]["r"],
        "lora_alpha": t["lora"]["alpha"],
        "lora_dropout": t["lora"]["dropout"],
        **{
            k: t[k]
            for k in (
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
        },
        "teacher_version": run.champion,
        "best_epoch": cfg["best_epoch"],
        "steps": cfg.get("steps"),
        "device": cfg["device"],
    }
    return {k: str(v) for k, v in params.items()}


def _metrics(report: dict) -> dict[str, float]:
    out = {}
    for name, entry in report["sets"].items():
        for role in ("champion", "candidate", "baseline"):
            for metric in ("accuracy", "macro_f1", "psnr"):
                value = entry.get(role, {}).get(metric)
                if isinstance(value, int | float):
                    out[f"{name}.{role}.{metric}"] = float(value)
    if "forgetting" in report:
        out["forgetting"] = float(report["forgetting"])
    return out


def quiet_mlflow() -> None:
    """Keep MLflow's chatter out of what a user reads: artifact download bars and the pyfunc
    CloudPickle warning (our pyfunc is a class of this package). The registration notices
    MLflow prints to stderr are held back in ``register``."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)


class Registry:
    def __init__(self, settings):
        import mlflow
        from mlflow import MlflowClient

        quiet_mlflow()

        self.settings = settings
        self.models = ModelStore(settings.state_dir)
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        self.client = MlflowClient(settings.mlflow_tracking_uri)

    # ---- reading -------------------------------------------------------------------

    def alias_version(self, model: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException:
            return None

    def version_tags(self, model: str, version: int) -> dict[str, str]:
        return dict(self.client.get_model_version(model, str(version)).tags)

    def local_version(self, model: str, version: int) -> int:
        return int(self.version_tags(model, version)[LOCAL_VERSION])

    def versions(self, model: str) -> list:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{model}'")
        except MlflowException:
            return []
        return sorted(found, key=lambda v: int(v.version))

    def _experiment(self, model: str) -> str:
        import mlflow

        name = f"flywheel/{model}"
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = f"{self.settings.mlflow_artifact_location.rstrip('/')}/{model}"
        return mlflow.create_experiment(name, artifact_location=location)

    # ---- registering ---------------------------------------------------------------

    def register(self, run) -> int:
        """Log the run and a pyfunc version of the candidate; tag it pending; alias ``candidate``."""
        import mlflow

        from orchestration.serving import AdapterModel, serving_meta

        info = self.models.info(run.model)
        max_length = json.loads((run.path / "training_config.json").read_text()).get("max_length")
        meta = serving_meta(info.task, info.labels, info.base_model, max_length)
        against = self._mlflow_version_of_local(run.model, run.champion)
        with mlflow.start_run(
            experiment_id=self._experiment(run.model), run_name=f"{run.model}-v{run.version}"
        ):
            mlflow.log_params(_flat_params(run))
            mlflow.log_params({f"data.{k}": str(v) for k, v in run.lineage.items()})
            mlflow.log_metrics(_metrics(run.report))
            mlflow.set_tags(
                {
                    "flywheel.model": run.model,
                    LOCAL_VERSION: str(run.version),
                    "flywheel.code_revision": code_revision(),
                    "flywheel.ge_success": str(run.gate.get("success")),
                }
            )
            for name in ("training_config.json", "data.json", "gate.json", "gate.txt", "eval.json"):
                if (run.path / name).is_file():
                    mlflow.log_artifact(str(run.path / name), "run")
            with tempfile.TemporaryDirectory() as tmp:
                meta_path = Path(tmp) / "meta.json"
                meta_path.write_text(json.dumps(meta))
                adapter_dir = Path(tmp) / "adapter"
                adapter_dir.mkdir()
                for f in run.path.glob("adapter_*"):
                    (adapter_dir / f.name).write_bytes(f.read_bytes())
                notices = io.StringIO()  # "Registered model ... already exists", "Created version"
                with contextlib.redirect_stderr(notices):
                    logged = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=AdapterModel(),
                        artifacts={"adapter": str(adapter_dir), "meta": str(meta_path)},
                        pip_requirements=["torch", "transformers", "peft", "pandas"],
                        registered_model_name=run.model,
                    )
        version = int(logged.registered_model_version)
        tags = {
            VERDICT: "pending",
            LOCAL_VERSION: str(run.version),
            AGAINST: str(against) if against else "none",
            "flywheel.window_start": str(run.lineage.get("window_start")),
            "flywheel.window_end": str(run.lineage.get("window_end")),
            "flywheel.new_samples": str(run.lineage.get("new_samples")),
            "flywheel.replayed_samples": str(run.lineage.get("replay")),
            "flywheel.ge_success": str(run.gate.get("success")),
            "flywheel.code_revision": code_revision(),
        }
        for k, v in tags.items():
            self.client.set_model_version_tag(run.model, str(version), k, v)
        self.client.set_registered_model_alias(run.model, CANDIDATE, str(version))
        state = self.models.state(run.model)
        mapping = state.get("mlflow_versions", {})
        mapping[str(run.version)] = version
        self.models.update_state(run.model, mlflow_versions=mapping)
        return version

    def _mlflow_version_of_local(self, model: str, local: int | None) -> int | None:
        if local is None:
            return None
        mapped = self.models.state(model).get("mlflow_versions", {}).get(str(local))
        return int(mapped) if mapped else None

    # ---- deciding ------------------------------------------------------------------

    def decide(
        self,
        model: str,
        version: int,
        report: dict,
        lineage: dict,
        gate: dict,
        review_files: list[Path] | None = None,
    ) -> Verdict:
        """Gate the registered ``version`` and move the aliases (compare-and-set, under the lock)."""
        from orchestration.review_note import description

        info = self.models.info(model)
        with model_lock(self.settings.state_dir, model):
            tags = self.version_tags(model, version)
            if tags.get(VERDICT) not in (None, "pending"):
                raise RegistryError(f"{model} v{version} was already decided ({tags[VERDICT]})")
            against = None if tags.get(AGAINST) in (None, "none") else int(tags[AGAINST])
            current = self.alias_version(model, CHAMPION)
            if current != against:
                verdict = Verdict(
                    False,
                    [
                        f"stale: the champion moved from v{against} to v{current} while this "
                        "candidate was evaluated; retrain against the new champion"
                    ],
                )
            else:
                verdict = decide(report, self.settings.gate, model, info.task, first=current is None)
            self.client.update_model_version(
                model, str(version), description=description(model, version, report, verdict, lineage, gate)
            )
            run_id = self.client.get_model_version(model, str(version)).run_id
            for path in review_files or []:
                self.client.log_artifact(run_id, str(path), "review")
            self.client.set_model_version_tag(
                model,
                str(version),
                "flywheel.reasons",
                "; ".join(verdict.reasons) or "all guards within tolerance",
            )
            if verdict.passed:
                self._move_champion(model, version, current)
                self.client.set_model_version_tag(model, str(version), VERDICT, "promoted")
                history.record(
                    self.settings.state_dir,
                    model,
                    "promote",
                    version=version,
                    previous=current,
                    reason="; ".join(c["reason"] for c in verdict.checks),
                )
            else:
                self.client.set_model_version_tag(model, str(version), VERDICT, "rejected")
                history.record(
                    self.settings.state_dir,
                    model,
                    "reject",
                    version=version,
                    champion=current,
                    reason="; ".join(verdict.reasons),
                )
        return verdict

    def _move_champion(self, model: str, version: int, current: int | None) -> None:
        self.client.set_registered_model_alias(model, CHAMPION, str(version))
        if current is not None:
            self.client.set_registered_model_alias(model, PREVIOUS, str(current))
        self.models.update_state(model, champion=self.local_version(model, version), champion_mlflow=version)

    # ---- rollback and repair --------------------------------------------------------

    def check_loads(self, model: str, version: int) -> None:
        """Load ``models:/model/version`` and predict on golden texts, or raise RegistryError."""
        import mlflow.pyfunc

        try:
            loaded = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
            golden = self.models.golden(model).head(8)
            out = loaded.predict(golden[["text"]])
            if len(out) != len(golden) or "label" not in out:
                raise RegistryError(f"{model} v{version} predicted {len(out)} rows for {len(golden)} texts")
        except RegistryError:
            raise
        except Exception as exc:  # any load/predict failure makes the version unfit to serve
            raise RegistryError(
                f"{model} v{version} does not load or predict: {type(exc).__name__}: {exc}"
            ) from exc

    def rollback(self, model: str, to: int | None = None, reason: str = "manual rollback") -> tuple[int, int]:
        """Move ``champion`` to ``to`` (default: the ``previous`` alias) after checking it serves."""
        with model_lock(self.settings.state_dir, model):
            current = self.alias_version(model, CHAMPION)
            target = to if to is not None else self.alias_version(model, PREVIOUS)
            if current is None:
                raise RegistryError(f"{model} has no champion; nothing to roll back")
            if target is None:
                raise RegistryError(
                    f"{model} has no previous champion to roll back to (champion is v{current}); "
                    "pass --to VERSION to choose one"
                )
            if target == current:
                raise RegistryError(f"v{target} is already the champion of {model}")
            self.check_loads(model, target)
            self._move_champion(model, target, current)
            self.client.set_model_version_tag(model, str(target), VERDICT, "rolled-back-to")
            history.record(
                self.settings.state_dir, model, "rollback", version=target, previous=current, reason=reason
            )
        return current, target

    def pending(self, model: str) -> list[int]:
        return [int(v.version) for v in self.versions(model) if v.tags.get(VERDICT) == "pending"]

    def repair(self, model: str) -> list[tuple[int, Verdict]]:
        """Finish the decision of versions left pending by a crash (their eval.json is kept locally)."""
        from training.run import load_run

        done = []
        for version in self.pending(model):
            run = load_run(self.settings, model, self.local_version(model, version))
            verdict = self.decide(model, version, run.report, run.lineage, run.gate)
            history.record(self.settings.state_dir, model, "repair", version=version, reason=verdict.label)
            done.append((version, verdict))
        return done
