"""The MLflow pyfunc of a Flywheel version: base model from the installed package + adapter.

Only the adapter (LoRA weights and head, ~0.3 MB for MiniLM) and the label set are stored
in MLflow; ``models:/NAME@champion`` predicts a DataFrame with a ``text`` column as
``label`` and ``confidence``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc


class AdapterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from training.tasks import get_adapter
        from training.trainer import load_adapter_model

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.labels = meta["labels"]
        self.adapter = get_adapter(meta["task"], max_length=meta.get("max_length") or 64)
        self.model = load_adapter_model(self.adapter, self.labels, context.artifacts["adapter"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from training.trainer import predict

        frame = pd.DataFrame({"text": list(model_input["text"])})
        logits = predict(self.adapter, self.model, self.adapter.encode(frame, self.labels))
        probs = logits.softmax(-1)
        conf, idx = probs.max(-1)
        return pd.DataFrame({"label": [self.labels[i] for i in idx.tolist()], "confidence": conf.tolist()})
