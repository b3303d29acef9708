"""The MLflow pyfunc of a Flywheel version: the task's base model + the version's adapter.

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
