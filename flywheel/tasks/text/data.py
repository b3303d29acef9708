"""The text-classification task's samples, Feast columns, the data gate's checks and the training dataset."""

from __future__ import annotations

from typing import Any

from flywheel.errors import DataError, FlywheelError
from flywheel.lazy import lazy_import
from flywheel.tasks.base import (
    Suite,
    read_table,
    shown,
)
from flywheel.tasks.text.fields import TextFields

pd = lazy_import("pandas")


class TextDataset:
    """Texts tokenized once (padded to ``max_length``), read sample by sample as tensors."""

    def __init__(self, frame, tokenizer, max_length: int, labels: list[str]):
        import torch

        enc = tokenizer(
            [str(t) for t in frame["text"]],
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="pt",
        )
        self.tensors = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "label" in frame:
            index = {label: i for i, label in enumerate(labels)}
            unknown = sorted(set(frame["label"]) - set(index))
            if unknown:
                raise FlywheelError(f"labels {unknown} are not in the model's label set {labels}")
            self.tensors["labels"] = torch.tensor([index[v] for v in frame["label"]], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.tensors["input_ids"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}

    def batch(self, index: list[int]) -> dict:
        """Samples ``index`` collated (the trainer's fast path: one gather per tensor)."""
        return {k: v[index] for k, v in self.tensors.items()}

    def lengths(self) -> list[int]:
        """Tokens per sample (batches of similar length waste less on padding)."""
        return self.tensors["attention_mask"].sum(1).tolist()


class FrozenStates(TextDataset):
    """Samples as the frozen lower layers leave them: token states ``hidden`` [n, tokens, width]
    (padded to the longest sample), the attention mask and the labels. Built by
    ``TextModel.cache_frozen``; ``TextModel.forward`` runs the trained layers on it."""

    def __init__(self, tensors: dict):  # computed states, not texts: no tokenizing here
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["hidden"])


class TextData(TextFields):
    """The data facet of the text task's spec."""

    sample_columns = ["text", "label"]
    feast_fields = {"text": "String", "label": "String", "pred_label": "String"}
    strata = "label"

    def dataset(self, frame, labels: list[str]) -> TextDataset:
        return TextDataset(frame, self.tokenizer, self.max_length, labels)

    @classmethod
    def feast_columns(cls, record, images) -> dict[str, Any]:
        return {"text": record.text, "label": record.label, "pred_label": record.prediction_label}

    def load_samples(self, path, text_column: str = "text", label_column: str = "label"):
        """A JSONL or CSV file with text and label columns → DataFrame(sample_id, text, label)
        (a DataFrame is taken as it is)."""

        if isinstance(path, pd.DataFrame):
            return path.copy()

        frame = read_table(path, "text and label columns")
        missing = [c for c in (text_column, label_column) if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path} has no column {', '.join(missing)} (columns: {', '.join(map(str, frame.columns))}); "
                "name them text and label, or pass --text-column/--label-column"
            )
        out = pd.DataFrame(
            {
                "sample_id": frame["sample_id"],
                "text": frame[text_column].astype(str),
                "label": frame[label_column].astype(str),
            }
        )
        bad = out["text"].str.strip().eq("") | frame[label_column].isna()
        if bad.any():
            rows = ", ".join(str(i + 1) for i in out.index[bad][:5])
            raise DataError(f"{path}: {int(bad.sum())} rows have an empty text or label (rows {rows}, ...)")
        return out

    def is_sample(self, frame):
        return frame["label"].notna() & frame["text"].notna()

    def class_counts(self, frame, labels: list[str]) -> dict[str, int]:
        counts = frame["label"].value_counts()
        return {label: int(counts.get(label, 0)) for label in labels}

    def labels_of(self, frame) -> list[str]:
        return sorted(frame["label"].dropna().unique())

    def quarantine_reasons(self, frame, labels: list[str], gate, mark) -> None:
        text, label = frame["text"], frame["label"]
        mark(text.isna(), "text missing")
        mark(~text.map(lambda v: isinstance(v, str)), "text is not a string")
        mark(text.astype(str).str.strip() == "", "text is blank")
        lengths = text.astype(str).str.len()
        mark(text.notna() & (lengths < gate.min_text_chars), f"text shorter than {gate.min_text_chars} chars")
        mark(text.notna() & (lengths > gate.max_text_chars), f"text longer than {gate.max_text_chars} chars")
        mark(label.isna(), "label missing")
        known = set(labels)
        mark(
            ~label.map(lambda v: isinstance(v, str) and v in known),
            f"label not in the model's label set {list(labels)}",
        )

    def shown_example(self, row) -> dict[str, Any]:
        return {"label": shown(row["label"], 40), "text": shown(row["text"], 60)}

    def expectations(self, frame, labels: list[str], gate) -> list[Suite]:
        """Text and labels per sample, and the batch's class balance (offending labels named)."""
        import great_expectations as gx

        ex = gx.expectations
        samples = Suite(
            frame[["text", "label"]],
            [
                ex.ExpectColumnValuesToNotBeNull(column="text"),
                ex.ExpectColumnValueLengthsToBeBetween(
                    column="text", min_value=gate.min_text_chars, max_value=gate.max_text_chars
                ),
                ex.ExpectColumnValuesToNotBeNull(column="label"),
                ex.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)),
            ],
        )
        counts = frame["label"].value_counts()
        balance = pd.DataFrame({"label": list(labels), "count": [int(counts.get(x, 0)) for x in labels]})
        balance["share"] = balance["count"] / max(1, len(frame))

        def explain(check: dict) -> None:  # name the offending labels, not just their counts
            col = check["column"]
            bad = balance[
                (balance[col] < gate.min_per_class)
                if col == "count"
                else (balance[col] > gate.max_class_share)
            ]
            check["examples"] = [f"{r.label}: {r.count} ({r.share:.0%})" for r in bad.itertuples()]
            check["column"] = f"label ({col} per label)"

        per_class = Suite(
            balance,
            [
                ex.ExpectColumnValuesToBeBetween(column="count", min_value=gate.min_per_class),
                ex.ExpectColumnValuesToBeBetween(column="share", max_value=gate.max_class_share),
            ],
            explain,
        )
        return [samples, per_class]
