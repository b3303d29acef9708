"""The text-classification task's serving: the pyfunc's input and answer, the smoke test, the live value
of a labelled prediction."""

from __future__ import annotations

from typing import Any

from flywheel.lazy import lazy_import
from flywheel.tasks.base import (
    predict,
)
from flywheel.tasks.text.fields import TextFields

pd = lazy_import("pandas")


class TextServing(TextFields):
    """The serving facet of the text task's spec."""

    serving_input = "text"
    serving_output = "label"

    def serve(self, model, model_input, labels: list[str]):
        """``text`` column → ``label`` and ``confidence`` (the softmax's top class)."""

        frame = pd.DataFrame({"text": [str(t) for t in model_input["text"]]})
        logits = predict(self, model, self.dataset(frame, labels))
        conf, idx = logits.softmax(-1).max(-1)
        return pd.DataFrame({"label": [labels[i] for i in idx.tolist()], "confidence": conf.tolist()})

    def serving_example(self, golden):
        return golden[["text"]]

    @classmethod
    def serving_smoke(cls):

        return pd.DataFrame({"text": ["a smoke test of the served version"]})

    @classmethod
    def answer(cls, row: dict[str, Any]) -> dict[str, Any]:
        return {"label": str(row["label"]), "confidence": float(row["confidence"])}

    @classmethod
    def live_value(cls, record) -> float | None:
        """1 when the verified label is the predicted one (or the user accepted it), 0 when it
        is another (or the user rejected the prediction)."""
        if record.prediction_label is None:
            return None
        if record.accepted is False and record.label is None:
            return 0.0
        if record.label is None:
            return None
        return float(record.label == record.prediction_label)
