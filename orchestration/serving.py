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
from pathlib import Path

import mlflow.pyfunc


def serving_meta(spec, labels: list[str], record) -> dict:
    """What the pyfunc needs to rebuild a version of ``spec``'s task (``record``: the version's
    TrainingRecord)."""
    return {"task": spec.name, "labels": labels, **spec.serving_meta(record)}


class AdapterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from flywheel.tasks import spec_class
        from training.trainer import load_adapter_model

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.labels = meta["labels"]
        self.spec = spec_class(meta["task"]).from_serving_meta(meta)
        self.model = load_adapter_model(self.spec, self.labels, context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):
        return self.spec.serve(self.model, model_input, self.labels)


def load_version(settings, model: str, version: int | str = "champion"):
    """A version of ``model`` ready to ``predict``: a number, or an alias (``champion`` by
    default), from the configured tracking store (no process-wide MLflow state is assumed)."""
    import mlflow

    from orchestration.registry import quiet_mlflow

    quiet_mlflow()
    uri = f"models:/{model}@{version}" if isinstance(version, str) else f"models:/{model}/{int(version)}"
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


class ChampionPredictor:
    """Answers with ``models:/NAME@champion`` and follows the alias (``http_api.Predictor``).

    The first request for a model loads its champion; afterwards a background thread re-reads
    the alias every ``serving.refresh_s`` and, when it moved (a promotion or a rollback),
    loads the new version and checks it predicts *before* swapping it in. Requests keep
    being answered by the old version during the load, so a switch fails none; a version
    that does not load is reported and the old one keeps serving. ``shadow`` answers with
    the ``candidate`` alias when it differs from the champion.
    """

    def __init__(self, settings, log=None):
        import logging
        import threading

        from mlflow import MlflowClient

        from orchestration.registry import quiet_mlflow

        quiet_mlflow()
        self.settings = settings
        self.client = MlflowClient(settings.mlflow_tracking_uri)
        self.log = log or logging.getLogger("flywheel.serving").warning
        self._served: dict[tuple[str, str], _Loaded] = {}  # (model, alias) → loaded version
        self._lock = threading.Lock()  # serialises loads
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- the Predictor protocol ---------------------------------------------------------

    def predict(self, model_name: str, inputs: list):
        return self._answer(self._current(model_name, "champion"), model_name, inputs)

    def shadow(self, model_name: str, inputs: list):
        from orchestration.registry import CANDIDATE

        champion = self._current(model_name, "champion")
        version = self._alias(model_name, CANDIDATE)
        if version is None or version == champion.version:
            return None
        return self._answer(self._load(model_name, CANDIDATE, version), model_name, inputs)

    # ---- loading and following the alias -------------------------------------------------

    def _answer(self, loaded: _Loaded, model_name: str, inputs: list):
        from pipelines.http_api import NotServed, Served

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

    def _alias(self, model: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _current(self, model: str, alias: str) -> _Loaded:
        from pipelines.http_api import NotServed

        loaded = self._served.get((model, alias))
        if loaded is not None:
            return loaded
        try:
            version = self._alias(model, alias)
        except Exception as exc:
            raise NotServed(503, "registry_unavailable", f"the model registry did not answer: {exc}") from exc
        if version is None:
            raise NotServed(
                404, "no_champion", f"model {model!r} has no {alias} version; bootstrap or promote one first"
            )
        return self._load(model, alias, version)

    def _load(self, model: str, alias: str, version: int) -> _Loaded:
        from pipelines.http_api import NotServed

        with self._lock:
            loaded = self._served.get((model, alias))
            if loaded is not None and loaded.version == version:
                return loaded
            try:
                fresh = _Loaded(version, load_version(self.settings, model, version))
            except Exception as exc:
                if loaded is not None:
                    self.log(
                        f"{model} v{version} does not load ({type(exc).__name__}: {exc}); "
                        f"v{loaded.version} keeps serving"
                    )
                    return loaded
                raise NotServed(
                    503, "not_loadable", f"{model} v{version} does not load: {type(exc).__name__}: {exc}"
                ) from exc
            self._served[(model, alias)] = fresh
            if loaded is not None:
                self.log(f"{model}: {alias} v{loaded.version} -> v{version}")
            self._watch()
            return fresh

    def _watch(self) -> None:
        import threading

        if self._watcher is None:
            self._watcher = threading.Thread(target=self._follow, name="champion-watch", daemon=True)
            self._watcher.start()

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.serving.refresh_s):
            self.refresh()

    def refresh(self) -> None:
        """Load every served alias's current version (what the watcher does each period)."""
        for model, alias in list(self._served):
            try:
                version = self._alias(model, alias)
                if version is not None:
                    self._load(model, alias, version)
            except Exception as exc:  # noqa: BLE001 - reported; the loaded version keeps serving
                self.log(f"following {model}@{alias} failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()
