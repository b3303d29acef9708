"""Serving: the MLflow pyfunc of a version, and the predictor ``POST /v1/predict`` uses.

The pyfunc of a Flywheel version is the task's base model + the version's adapter.

Only the adapter (LoRA weights and the layers trained in full, plus the files its task needs
to rebuild the base) and a small meta file (task, labels, what the spec needs to rebuild its
base model) are stored in MLflow. ``models:/NAME@champion`` predicts what the task's spec
serves: for text, a DataFrame with a ``text`` column → ``label`` and ``confidence``; for
image restoration, an ``image_png_b64`` column → ``image_png_b64`` of the restored images.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.pyfunc.model import PythonModel

from flywheel.tasks import spec_class
from flywheel.tasks.protocols import Server
from orchestration import mlflow_store
from orchestration.mlflow_store import CANDIDATE, quiet_mlflow, use_credentials
from pipelines.predict_api import NotServed, Served
from training.trainer import load_adapter_model

if TYPE_CHECKING:
    from flywheel.settings import Settings


def serving_meta(spec: Server, labels: list[str], record) -> dict:
    """What the pyfunc needs to rebuild a version of ``spec``'s task (``record``: the version's
    TrainingRecord)."""
    return {"task": spec.name, "labels": labels, **spec.serving_meta(record)}


class AdapterModel(PythonModel):
    # The task's spec checks the input; MLflow's type-hint validation (and its request, in
    # colour, for type hints on ``predict``) has nothing to add.
    _skip_type_hint_validation = True

    def load_context(self, context):
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.labels = meta["labels"]
        self.spec = spec_class(meta["task"]).from_serving_meta(meta)
        self.model = load_adapter_model(self.spec, self.labels, context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):
        return self.spec.serve(self.model, model_input, self.labels)


def load_version(settings: Settings, model: str, version: int | str = "champion"):
    """A version of ``model`` ready to ``predict``: a number, or an alias (``champion`` by
    default), from the configured tracking store (no process-wide MLflow state is assumed)."""
    import mlflow

    quiet_mlflow()
    use_credentials(settings)
    uri = f"models:/{model}@{version}" if isinstance(version, str) else f"models:/{model}/{int(version)}"

    mlflow_store.ensure(settings)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(previous)


class _Loaded:
    """A loaded version: its number, the pyfunc and the task spec it serves with."""

    def __init__(self, version: int, pyfunc):
        self.version = version
        self.pyfunc = pyfunc
        self.spec = pyfunc.unwrap_python_model().spec

    def smoke_test(self) -> None:
        """Predict one example of the task; raises what the version raises."""
        out = self.pyfunc.predict(self.spec.serving_smoke())
        if len(out) != 1 or self.spec.serving_output not in out:
            raise ValueError(
                f"predicted {list(out.columns)} for one input; {self.spec.serving_output!r} expected"
            )


class ChampionPredictor:
    """Answers with ``models:/NAME@champion`` and follows the alias (``http_api.Predictor``).

    The first request for a model loads its champion; afterwards a background thread re-reads
    the aliases every ``serving.refresh_s`` and, when one moved (a promotion or a rollback),
    loads the new version and checks it predicts *before* swapping it in. Requests keep
    being answered by the old version during the load, so a switch fails none; a version
    that does not load or predict is reported, the old one keeps serving, and it is tried
    again only after ``serving.refresh_s``. Loads are serialised per model and alias, so a
    slow load of one model never holds up another. ``shadow`` answers with the ``candidate``
    alias when it differs from the champion (it is followed the same way).
    """

    def __init__(self, settings: Settings, log=None):
        from mlflow import MlflowClient

        quiet_mlflow()
        use_credentials(settings)
        mlflow_store.ensure(settings)  # created or migrated once, whoever comes first
        self.settings = settings
        self.client = MlflowClient(settings.mlflow_tracking_uri)
        self.log = log or logging.getLogger("flywheel.serving").warning
        self._served: dict[
            tuple[str, str], _Loaded | None
        ] = {}  # (model, alias) → loaded (None: no such alias)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._failed: dict[tuple[str, int], float] = {}  # (model, version) → when its load failed
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- the Predictor protocol ---------------------------------------------------------

    def predict(self, model_name: str, inputs: list):
        loaded = self._current(model_name, "champion")
        if loaded is None:
            raise NotServed(
                404,
                "no_champion",
                f"model {model_name!r} has no champion version; bootstrap or promote one first",
            )
        return self._answer(loaded, model_name, inputs)

    def shadow(self, model_name: str, inputs: list):
        champion = self._served.get((model_name, "champion"))
        candidate = self._current(model_name, CANDIDATE)
        if candidate is None or champion is None or candidate.version == champion.version:
            return None
        return self._answer(candidate, model_name, inputs)

    def _answer(self, loaded: _Loaded, model_name: str, inputs: list):
        spec = loaded.spec
        wrong = [i for i, x in enumerate(inputs) if getattr(x, spec.serving_input) is None]
        if wrong:
            raise NotServed(
                422,
                "wrong_input",
                f"{model_name} is a {spec.name} model: inputs need '{spec.serving_input}' "
                f"(inputs {wrong[:10]} have none)",
            )
        out = loaded.pyfunc.predict(spec.serving_frame(inputs))
        answers = [spec.answer(row) for row in out.to_dict("records")]
        return Served(model_name, loaded.version, spec.name, answers)

    # ---- loading and following the aliases -----------------------------------------------

    def _alias(self, model: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _lock(self, key: tuple[str, str]):
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def _current(self, model: str, alias: str) -> _Loaded | None:
        """What answers for ``model@alias`` now; loaded on first use (None: no such alias)."""

        key = (model, alias)
        if key in self._served:
            return self._served[key]
        try:
            version = self._alias(model, alias)
        except Exception as exc:
            raise NotServed(503, "registry_unavailable", f"the model registry did not answer: {exc}") from exc
        if version is None:
            if alias != "champion":  # a candidate of a served model: followed, loaded when it appears
                self._served.setdefault(key, None)
                self._watch()
            return None  # (an unknown model is not remembered: clients choose the names)
        return self._load(model, alias, version, first=True)

    def _load(self, model: str, alias: str, version: int, first: bool = False) -> _Loaded | None:
        """``version`` in place for ``model@alias``, loaded and smoke-tested first; on failure
        the version in place stays (or, for a first load, NotServed 503)."""

        key = (model, alias)
        with self._lock(key):
            loaded = self._served.get(key)
            if loaded is not None and loaded.version == version:
                return loaded
            failed_at = self._failed.get((model, version))
            if failed_at is not None and time.monotonic() - failed_at < self.settings.serving.refresh_s:
                if first and loaded is None:
                    raise NotServed(503, "not_loadable", f"{model} v{version} does not load; retry later")
                return loaded
            try:
                fresh = _Loaded(version, load_version(self.settings, model, version))
                fresh.smoke_test()
            except Exception as exc:
                self._failed[(model, version)] = time.monotonic()
                what = f"{model} v{version} does not load or predict ({type(exc).__name__}: {exc})"
                if loaded is not None:
                    self.log(f"{what}; v{loaded.version} keeps serving {alias}")
                    return loaded
                if first:
                    raise NotServed(503, "not_loadable", what) from exc
                self.log(what)
                return None
            self._served[key] = fresh
            self._failed.pop((model, version), None)
            if loaded is not None:
                self.log(f"{model}: {alias} v{loaded.version} -> v{version}")
            self._watch()
            return fresh

    def _watch(self) -> None:
        with self._locks_lock:
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._follow, name="alias-watch", daemon=True)
                self._watcher.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.serving.refresh_s):
            self.refresh()

    def refresh(self) -> None:
        """Load every followed alias's current version (what the watcher does each period)."""
        for model, alias in list(self._served):
            try:
                version = self._alias(model, alias)
                if version is None:
                    self._served[(model, alias)] = None
                else:
                    self._load(model, alias, version)
            except Exception as exc:  # noqa: BLE001 - reported; the loaded version keeps serving
                self.log(f"following {model}@{alias} failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()
