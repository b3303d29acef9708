"""The MLflow pyfunc of a Flywheel version: base model from the installed package + adapter.

Only the adapter (LoRA weights and head, ~0.3 MB for MiniLM) and the label set are stored
in MLflow; ``models:/NAME@champion`` predicts a DataFrame with a ``text`` column as
``label`` and ``confidence``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc


def serving_meta(task: str, labels: list[str], base_model: str, max_length: int | None) -> dict:
    """What the pyfunc needs to rebuild a version: ``base_model`` is None for the encoder of the
    installed package (its path differs per machine), else the configured checkpoint's path."""
    from training.tasks import default_base_model

    default = not base_model or Path(base_model).resolve() == default_base_model().resolve()
    return {
        "task": task,
        "labels": labels,
        "max_length": max_length,
        "base_model": None if default else base_model,
    }


def base_model_of(meta: dict) -> str | None:
    """The checkpoint a version was trained on, checked to exist here (None: the packaged one)."""
    from flywheel.errors import FlywheelError

    base = meta.get("base_model")
    if base and not Path(base).is_dir():
        raise FlywheelError(
            f"this version was trained on the base model {base}, which is not on this machine; "
            "install it at that path (training.base_model) before loading the version"
        )
    return base


class AdapterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from training.tasks import get_adapter
        from training.trainer import load_adapter_model

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.labels = meta["labels"]
        self.adapter = get_adapter(
            meta["task"], base_model=base_model_of(meta), max_length=meta.get("max_length") or 64
        )
        self.model = load_adapter_model(self.adapter, self.labels, context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from training.trainer import predict

        frame = pd.DataFrame({"text": list(model_input["text"])})
        logits = predict(self.adapter, self.model, self.adapter.encode(frame, self.labels))
        probs = logits.softmax(-1)
        conf, idx = probs.max(-1)
        return pd.DataFrame({"label": [self.labels[i] for i in idx.tolist()], "confidence": conf.tolist()})


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
