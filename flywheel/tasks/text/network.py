"""The text classifier: a sentence encoder pooled the way it was trained, and a linear head.

A sentence-transformers checkpoint (all-MiniLM-L6-v2 by default) was trained to produce
mean-pooled, L2-normalised token states; ``AutoModelForSequenceClassification`` would
instead classify from BERT's pooler (dense + tanh on [CLS]), which such a checkpoint never
trained, so a few optimizer steps from a random head start near chance. ``SentenceClassifier``
pools as the checkpoint's ``1_Pooling``/``modules.json`` say (mean and normalise for MiniLM),
and its head is initialised from a linear probe fitted on the frozen embeddings
(:func:`fit_probe`), so training starts where the probe is and LoRA improves on it.

``TextHead`` is written beside the adapter (``adapter_head.json``) so a version always loads
with the head it was trained with; a version without the file predates it and is loaded as
``BertForSequenceClassification`` (pooling ``cls-pooler``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from flywheel.blas import one_blas_thread
from flywheel.lazy import lazy_import

np = lazy_import("numpy")
_sk_exceptions = lazy_import("sklearn.exceptions")
_sk_linear = lazy_import("sklearn.linear_model")
_sk_selection = lazy_import("sklearn.model_selection")

HEAD_FILE = "adapter_head.json"  # "adapter_*": copied with the adapter into MLflow
Pooling = Literal["mean", "cls", "max", "cls-pooler"]


@dataclass(frozen=True)
class TextHead:
    """How token states become a class score: pooling, normalisation, head shape."""

    pooling: Pooling = "mean"
    normalize: bool = True

    @classmethod
    def of_checkpoint(cls, path: Path | None) -> TextHead:
        """The pooling a sentence-transformers checkpoint was trained with (mean for a plain encoder)."""
        if path is None:
            return cls()
        pooling_cfg = Path(path) / "1_Pooling" / "config.json"
        pooling: Pooling = "mean"
        if pooling_cfg.is_file():
            cfg = json.loads(pooling_cfg.read_text())
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                pooling = "max"
        modules = Path(path) / "modules.json"
        normalize = modules.is_file() and any(
            m.get("type", "").endswith(".Normalize") for m in json.loads(modules.read_text())
        )
        return cls(pooling, normalize)

    @classmethod
    def load(cls, folder: Path) -> TextHead:
        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            return cls("cls-pooler", False)  # a version saved before the head file existed
        data = json.loads(path.read_text())
        return cls(data["pooling"], bool(data["normalize"]))

    def save(self, folder: Path) -> None:
        (Path(folder) / HEAD_FILE).write_text(json.dumps(asdict(self)) + "\n")


class SentenceClassifier(torch.nn.Module):
    """encoder → pooled (and normalised) sentence embedding → linear ``classifier``.

    The encoder is called ``bert`` like in ``BertForSequenceClassification`` so LoRA keys
    (``bert.encoder.layer.N.attention.self.query``) read the same in both kinds of version.
    """

    def __init__(self, encoder, num_labels: int, head: TextHead):
        super().__init__()
        self.bert = encoder
        self.config = encoder.config
        self.head = head
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)
        self.frozen_below = 0  # layers below this one are frozen; their outputs may be cached

    @property
    def layers(self) -> int:
        return len(self.bert.encoder.layer)

    def _mask(self, hidden, attention_mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def prefix(self, input_ids, attention_mask, upto: int):
        """The token states after the embeddings and the first ``upto`` layers (what the frozen
        layers give; computed once per sample by the trainer when they are frozen)."""
        hidden = self.bert.embeddings(input_ids=input_ids)
        mask = self._mask(hidden, attention_mask)
        for layer in self.bert.encoder.layer[:upto]:
            hidden = layer(hidden, mask)
        return hidden

    def from_prefix(self, hidden, attention_mask):
        """Class scores from :meth:`prefix`'s states at layer ``frozen_below``: the same as
        :meth:`forward` on the texts, without running the frozen layers again."""
        mask = self._mask(hidden, attention_mask)
        for layer in self.bert.encoder.layer[self.frozen_below :]:
            hidden = layer(hidden, mask)
        return self.classifier(self.pool(hidden, attention_mask))

    def embed(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(hidden, attention_mask)

    def pool(self, hidden, attention_mask):
        """One sentence vector from token states, the way the checkpoint was trained."""
        if self.head.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.head.pooling == "max":
            masked = hidden.masked_fill(attention_mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min)
            pooled = masked.max(1).values
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        if self.head.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def forward(self, input_ids, attention_mask):
        return self.classifier(self.embed(input_ids, attention_mask))


def fit_probe(features, targets, num_labels: int, seed: int = 0) -> tuple:
    """A multinomial logistic regression on frozen embeddings: (weight [k, d], bias [k]).

    The L2 strength is chosen by stratified cross-validation on the training data among a
    few values (sklearn's default C=1 among them), so the probe is at least the usual
    baseline. A label absent from the training data gets a zero row and a very low bias.
    """

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    present = np.unique(y)
    weight = np.zeros((num_labels, x.shape[1]))
    bias = np.full(num_labels, -20.0)
    if len(present) == 1:
        bias[present[0]] = 0.0
        return weight, bias
    counts = np.bincount(y, minlength=num_labels)[present]
    folds = int(min(5, counts.min()))
    best_c = 1.0
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", _sk_exceptions.ConvergenceWarning)
        if folds >= 2:
            cv = _sk_selection.StratifiedKFold(folds, shuffle=True, random_state=seed)
            scores = {
                c: _sk_selection.cross_val_score(
                    _sk_linear.LogisticRegression(C=c, max_iter=1000), x, y, cv=cv
                ).mean()
                for c in (1.0, 10.0, 100.0)
            }
            best_c = max(scores, key=lambda c: (round(scores[c], 6), -c))  # ties: stronger L2
        probe = _sk_linear.LogisticRegression(C=best_c, max_iter=2000).fit(x, y)
    coef, intercept = probe.coef_, probe.intercept_
    if len(present) == 2:  # sklearn's binary form: one row for the second class
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight[present] = coef
    bias[present] = intercept
    return weight, bias
