"""LoRA fine-tuning with distillation from the champion.

The student starts from the champion's adapter (or a fresh LoRA adapter for version 1);
the teacher is the frozen champion. Loss = task loss + alpha * distillation (temperature T),
over new and replayed samples alike. The teacher's outputs are computed once per dataset
(the teacher is frozen and in eval mode, so they do not change between epochs); that saves
a forward pass per step (``make bench`` measures it). AdamW, linear warmup then decay,
gradient clipping, early stopping on the new-window validation split (best epoch kept).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flywheel.settings import TrainingSettings
from training.tasks import TaskAdapter


def pick_device():
    """(device, autocast dtype): CUDA with bf16 autocast when present, else CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), None


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lora_model(adapter: TaskAdapter, labels: list[str], cfg: TrainingSettings):
    """A new version's model: the task's base model with fresh LoRA weights and trainable head."""
    from peft import LoraConfig, get_peft_model

    base = adapter.build(labels)
    config = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules or adapter.lora_targets,
        modules_to_save=adapter.modules_to_save or None,
    )
    return get_peft_model(base, config)


def load_adapter_model(adapter: TaskAdapter, labels: list[str], path: Path, trainable: bool = False):
    """A saved version: the base model plus the adapter (LoRA weights and the saved head)."""
    import torch
    from peft import PeftModel

    # The base's random head is replaced by the saved one; build it under a fixed seed without
    # touching the caller's RNG (``fit`` loads the champion after seeding with training.seed).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PeftModel.from_pretrained(adapter.build(labels, path), str(path), is_trainable=trainable)
    if not trainable:
        model.eval()
    return model


def batches(batch: dict, size: int, order=None):
    n = len(next(iter(batch.values())))
    idx = order if order is not None else range(n)
    idx = list(idx)
    for start in range(0, n, size):
        sel = idx[start : start + size]
        yield sel, {k: v[sel] for k, v in batch.items()}


def predict(adapter: TaskAdapter, model, batch: dict, size: int = 128, device=None):
    """Outputs of ``model`` on an encoded batch, in eval mode, without gradients."""
    import torch

    device = device or pick_device()[0]
    model.eval()
    model.to(device)
    outs = []
    with torch.inference_mode():
        for _, b in batches(batch, size):
            outs.append(adapter.forward(model, {k: v.to(device) for k, v in b.items()}).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


@dataclass
class FitResult:
    path: Path
    epochs_run: int
    best_epoch: int
    steps: int
    seconds: float
    samples_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    adapter: TaskAdapter,
    labels: list[str],
    train,
    val,
    cfg: TrainingSettings,
    out_dir: Path,
    champion_dir: Path | None = None,
    progress: bool = True,
    precompute_teacher: bool = True,
) -> FitResult:
    """Train and save the adapter to ``out_dir`` (safetensors + resolved config + baseline).

    The baseline (the task's frozen-encoder probe) is fitted on ``train`` and saved beside
    the adapter; a new version's head starts from it. Training runs ``cfg.epochs`` epochs but
    at least ``cfg.min_steps`` optimizer steps; early stopping (``cfg.patience`` epochs without
    a better validation loss) applies once the floor is reached, and the state with the best
    validation loss is kept; for a new version the untrained start (epoch 0: the probe) is one
    of the states, so it never ends worse than the probe on validation. A retrain always
    returns a trained state: whether it beats the champion is the gate's call.
    """
    import torch
    from tqdm.auto import tqdm

    seed_everything(cfg.seed)
    device, autocast = pick_device()
    use_teacher = champion_dir is not None and cfg.distill_alpha > 0
    train_b = adapter.encode(train, labels)
    val_b = adapter.encode(val, labels) if len(val) else None
    baseline = adapter.fit_baseline(train_b, labels, cfg.seed)
    if champion_dir is not None:
        student = load_adapter_model(adapter, labels, champion_dir, trainable=True)
    else:
        student = lora_model(adapter, labels, cfg)
        if baseline is not None:
            adapter.init_from_baseline(student, baseline)
    teacher = load_adapter_model(adapter, labels, champion_dir) if use_teacher else None
    teacher_out = None
    if teacher is not None and precompute_teacher:
        teacher_out = predict(adapter, teacher, train_b, cfg.eval_batch_size, device)
    if teacher is not None:
        teacher.to(device)

    student.to(device)
    head, lora = [], []
    for name, p in student.named_parameters():
        if p.requires_grad:
            (head if any(m in name for m in adapter.modules_to_save) else lora).append(p)
    params = head + lora
    optimizer = torch.optim.AdamW(
        [
            {"params": lora, "lr": cfg.learning_rate},
            {"params": head, "lr": cfg.head_learning_rate or cfg.learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = max(steps_per_epoch * cfg.epochs, cfg.min_steps)
    epochs = math.ceil(total / steps_per_epoch)
    warmup = int(total * cfg.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    generator = torch.Generator().manual_seed(cfg.seed)

    def trainable_state():
        return {
            k: v.detach().clone()
            for k, v in student.state_dict().items()
            if "lora_" in k or any(m in k for m in adapter.modules_to_save)
        }

    def validate(record: dict) -> float:
        """Adds the validation figures to ``record``; returns the score to maximise."""
        if val_b is not None:
            out = predict(adapter, student, val_b, cfg.eval_batch_size, device)
            record["val_loss"] = float(adapter.task_loss(out, val_b))
            metric = adapter.primary_metric
            record["val_" + metric] = adapter.metrics(out, val_b, labels)[metric]
            return -record["val_loss"]
        return -record.get("train_loss", math.inf)

    history: list[dict[str, Any]] = []
    best, best_epoch, best_state, bad_epochs, step = -math.inf, 0, None, 0, 0
    if val_b is not None and champion_dir is None:  # a new version may stay at the probe it starts from
        start = {"epoch": 0}
        best = validate(start)
        best_state = trainable_state()
        history.append(start)
    started = time.perf_counter()
    seen = 0
    bar = tqdm(total=total, desc="training", unit="step", disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        student.train()
        order = torch.randperm(n, generator=generator).tolist()
        losses = []
        for sel, b in batches(train_b, cfg.batch_size, order):
            if step >= total:
                break
            b = {k: v.to(device) for k, v in b.items()}
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                out = adapter.forward(student, b)
                loss = adapter.task_loss(out, b)
                if teacher is not None:
                    if teacher_out is not None:
                        t_out = teacher_out[sel].to(device)
                    else:
                        with torch.no_grad():
                            t_out = adapter.forward(teacher, b)
                    loss = loss + cfg.distill_alpha * adapter.distill_loss(out, t_out, cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += len(sel)
            losses.append(loss.item())
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}", samples_s=f"{rate:.0f}")
            bar.update()
        record: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": sum(losses) / len(losses)}
        score = validate(record)
        history.append(record)
        if score > best:
            best, best_epoch, bad_epochs = score, epoch, 0
            best_state = trainable_state()
        else:
            bad_epochs += 1
            if bad_epochs > cfg.patience and step >= cfg.min_steps:
                break
    bar.close()
    if best_state is not None and best_epoch != history[-1]["epoch"]:
        student.load_state_dict(best_state, strict=False)
    seconds = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(str(out_dir), safe_serialization=True)
    adapter.save_architecture(student, out_dir)
    if baseline is not None:
        adapter.save_baseline(baseline, out_dir)
    resolved = {
        "task": adapter.name,
        "labels": labels,
        "base_model": str(getattr(adapter, "base_model", "")),
        "max_length": getattr(adapter, "max_length", None),
        "teacher": str(champion_dir) if champion_dir else None,
        "device": str(device),
        "training": json.loads(cfg.model_dump_json()),
        "samples": {"train": int(n), "validation": len(val)},
        "steps": step,
        "history": history,
        "best_epoch": best_epoch,
    }
    (out_dir / "training_config.json").write_text(json.dumps(resolved, indent=2, default=str))
    trained = [h for h in history if h["epoch"] > 0]
    return FitResult(
        out_dir, len(trained), best_epoch, step, seconds, seen / seconds if seconds else 0.0, history
    )


def result_dict(result: FitResult) -> dict:
    d = asdict(result)
    d["path"] = str(result.path)
    return d
