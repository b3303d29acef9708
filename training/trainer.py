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
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from flywheel.errors import FlywheelError
from flywheel.settings import TrainingSettings
from flywheel.tasks.base import batches, cpu_threads, evidence_of, length_buckets, pick_device, predict
from flywheel.tasks.protocols import Learner
from training.version import VersionFolder


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lora_model(spec: Learner, labels: list[str], cfg: TrainingSettings):
    """A new version's model: the task's base model with fresh LoRA weights and trainable head."""
    from peft import LoraConfig, get_peft_model

    base = spec.build(labels)
    config = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules or spec.lora_targets,
        modules_to_save=spec.modules_to_save or None,
    )
    return get_peft_model(base, config)


def load_adapter_model(spec: Learner, labels: list[str], path: Path, trainable: bool = False):
    """A saved version: the base model plus the adapter (LoRA weights and the saved head)."""
    import torch
    from peft import PeftModel

    # The base's random head is replaced by the saved one; build it under a fixed seed without
    # touching the caller's RNG (``fit`` loads the champion after seeding with training.seed).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PeftModel.from_pretrained(spec.build(labels, path), str(path), is_trainable=trainable)
    if not trainable:
        model.eval()
    return model


@dataclass
class FitResult:
    path: Path
    epochs_run: int
    best_epoch: int
    steps: int
    seconds: float
    samples_per_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the fit (bench_training)
    kept: str = "trained"  # or "probe" (see _probe_or_trained)


class Stopped(FlywheelError):
    """Training was asked to stop (SIGTERM to `flywheel run`); nothing was saved."""


@dataclass
class FitInputs:
    """What a fit trains on and from: the task, the data, the settings and the teacher."""

    spec: Learner
    labels: list[str]
    train: Any  # DataFrame
    val: Any  # DataFrame (may be empty)
    cfg: TrainingSettings
    champion_dir: Path | None = None  # the student's start and the teacher; None: a new version


@dataclass
class _Session:
    """A fit under way: models, encoded data, optimizer and schedule (built by ``_build``)."""

    inputs: FitInputs
    device: Any
    autocast: Any
    train_ds: Any  # the spec's Dataset of the training samples (or their frozen layers' states)
    val_ds: Any | None
    baseline: Any
    student: Any
    teacher: Any
    teacher_out: Any
    params: list
    optimizer: Any
    scheduler: Any
    generator: Any
    total: int  # optimizer steps
    epochs: int
    step: int = 0
    seen: int = 0


def _no_base_dropout(model) -> None:
    """The base model's dropout off (LoRA's own ``lora_dropout`` stays; ``training.encoder_dropout``
    false): drawing the masks was a quarter of a CPU step, but a retrain forgot more of the old
    data (bench_learning, docs/guide/training.md), so it is an option, not the default."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and "lora_dropout" not in name:
            module.p = 0.0


class _Clock:
    """Seconds per phase of a fit, added up under each name (``FitResult.phases``)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._mark = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self._mark, 3)
        self._mark = now


def _build(inputs: FitInputs, precompute_teacher: bool, clock: _Clock) -> _Session:
    """Models, data and optimizer of a fit.

    With ``training.lora.layers`` set (and a task that can split its model), only the top
    layers train; the lower layers' outputs are computed once here (``spec.cache_frozen``) and
    every step and validation runs the top layers only. The student starts as the champion, so
    its outputs before the first step are the teacher's: they are computed from the cached
    states and no second copy of the champion is loaded.
    """
    import torch

    spec, labels, cfg, champion_dir = inputs.spec, inputs.labels, inputs.cfg, inputs.champion_dir
    seed_everything(cfg.seed)
    device, autocast = pick_device()
    use_teacher = champion_dir is not None and cfg.distill_alpha > 0
    train_ds = spec.dataset(inputs.train, labels)
    val_ds = spec.dataset(inputs.val, labels) if len(inputs.val) else None
    clock.lap("tokenize")
    baseline = spec.fit_baseline(train_ds, labels, cfg.seed)
    clock.lap("probe")
    if champion_dir is not None:
        student = load_adapter_model(spec, labels, champion_dir, trainable=True)
    else:
        student = lora_model(spec, labels, cfg)
        if baseline is not None:
            spec.init_from_baseline(student, baseline)
    if not cfg.encoder_dropout:
        _no_base_dropout(student)
    student.to(device)
    frozen = spec.freeze_lower_layers(student, cfg.lora.layers) if cfg.lora.layers else 0
    clock.lap("load")
    if frozen:
        train_ds = spec.cache_frozen(student, train_ds, cfg.eval_batch_size, device)
        val_ds = spec.cache_frozen(student, val_ds, cfg.eval_batch_size, device) if val_ds else None
        clock.lap("frozen_layers")
    teacher, teacher_out = None, None
    if use_teacher and precompute_teacher and spec.cache_teacher:
        teacher_out = predict(spec, student, train_ds, cfg.eval_batch_size, device)  # student == champion
        clock.lap("teacher")
    elif use_teacher and champion_dir is not None:
        teacher = load_adapter_model(spec, labels, champion_dir)
        if frozen and cfg.lora.layers:
            spec.freeze_lower_layers(teacher, cfg.lora.layers)  # it reads the same cached states
        teacher.to(device)
        clock.lap("load")
    head: list[Any] = []
    lora: list[Any] = []
    for name, p in student.named_parameters():
        if p.requires_grad:
            (head if any(m in name for m in spec.modules_to_save) else lora).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": lora, "lr": cfg.learning_rate},
            {"params": head, "lr": cfg.head_learning_rate or cfg.learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(inputs.train) / cfg.batch_size)
    total = max(steps_per_epoch * cfg.epochs, cfg.min_steps)
    warmup = int(total * cfg.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    epochs = math.ceil(total / steps_per_epoch)
    return _Session(
        inputs, device, autocast, train_ds, val_ds, baseline, student, teacher, teacher_out, head + lora,
        optimizer, scheduler, generator, total, epochs,
    )  # fmt: skip


def _trainable_state(s: _Session) -> dict:
    mods = s.inputs.spec.modules_to_save
    return {
        k: v.detach().clone()
        for k, v in s.student.state_dict().items()
        if "lora_" in k or any(m in k for m in mods)
    }


def _validate(s: _Session, record: dict) -> float:
    """Adds the validation figures to ``record``; returns the score to maximise."""
    spec, cfg = s.inputs.spec, s.inputs.cfg
    if s.val_ds is not None:
        found, record["val_loss"] = evidence_of(
            spec, s.student, s.val_ds, cfg.eval_batch_size, s.device, loss=True
        )
        metric = spec.primary_metric
        record["val_" + metric] = spec.metrics(found, s.inputs.labels)[metric]
        return -record["val_loss"]
    return -record.get("train_loss", math.inf)


def _epoch(s: _Session, epoch: int, bar, started: float, should_stop) -> dict:
    """One pass over the shuffled training data (or what is left of the step budget)."""
    import torch

    spec, cfg = s.inputs.spec, s.inputs.cfg
    s.student.train()
    order = torch.randperm(len(s.inputs.train), generator=s.generator).tolist()
    lengths = getattr(s.train_ds, "lengths", None)
    if cfg.bucket_by_length and lengths is not None:
        order = length_buckets(order, lengths(), cfg.batch_size, s.generator)
    losses = []
    for sel, b in batches(s.train_ds, cfg.batch_size, order):
        if s.step >= s.total:
            break
        if should_stop is not None and should_stop():
            raise Stopped(f"training stopped at step {s.step} of {s.total}; nothing was saved")
        b = {k: v.to(s.device) for k, v in b.items()}
        with torch.autocast(s.device.type, dtype=s.autocast, enabled=s.autocast is not None):
            out = spec.forward(s.student, b)
            loss = spec.task_loss(out, b)
            if s.teacher is not None:
                if s.teacher_out is not None:
                    t_out = s.teacher_out[sel].to(s.device)
                else:
                    with torch.no_grad():
                        t_out = spec.forward(s.teacher, b)
                loss = loss + cfg.distill_alpha * spec.distill_loss(out, t_out, cfg.temperature)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s.params, cfg.grad_clip)
        s.optimizer.step()
        s.scheduler.step()
        s.step += 1
        s.seen += len(sel)
        losses.append(loss.item())
        rate = s.seen / (time.perf_counter() - started)
        bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}", samples_s=f"{rate:.0f}")
        bar.update()
    return {"epoch": epoch, "step": s.step, "train_loss": sum(losses) / len(losses)}


def _probe_or_trained(s: _Session, best_epoch: int, history: list[dict]) -> tuple[str, str | None]:
    """The rule (docs/guide/training.md): when fine-tuning does not beat the probe-initialised
    head on validation, a new version is the probe (the cheaper state: the frozen encoder and
    a linear head) and the verdict says so. Its untrained start is that state, one of those
    early stopping chooses from. A retrain is not replaced by its own probe: on the demo's
    replays the new window's validation split favoured the probe (fitted on it without the
    champion's distillation), which then lost 2 points of golden accuracy to the champion."""
    if s.inputs.champion_dir is not None or s.val_ds is None or s.baseline is None:
        return "trained", None
    if best_epoch == 0 and history and history[0].get("epoch") == 0:
        loss = history[0]["val_loss"]
        return "probe", f"no epoch of fine-tuning beat the baseline's validation loss {loss:.4f}"
    return "trained", None


def _save(s: _Session, folder: VersionFolder, history: list[dict], best_epoch: int, kept: tuple) -> None:
    inputs, spec = s.inputs, s.inputs.spec
    folder.path.mkdir(parents=True, exist_ok=True)
    s.student.save_pretrained(str(folder.path), safe_serialization=True)
    spec.save_architecture(s.student, folder.path)
    if s.baseline is not None:
        spec.save_baseline(s.baseline, folder.path)
    folder.save_training_record(
        {
            "task": spec.name,
            "labels": inputs.labels,
            "base_model": str(getattr(spec, "base_model", "")),
            "max_length": getattr(spec, "max_length", None),
            "teacher": str(inputs.champion_dir) if inputs.champion_dir else None,
            "device": str(s.device),
            "training": json.loads(inputs.cfg.model_dump_json()),
            "samples": {"train": len(inputs.train), "validation": len(inputs.val)},
            "steps": s.step,
            "history": history,
            "best_epoch": best_epoch,
            "kept": kept[0],
            "kept_because": kept[1],
        }
    )


def fit(
    spec: Learner,
    labels: list[str],
    train,
    val,
    cfg: TrainingSettings,
    out_dir: Path | VersionFolder,
    champion_dir: Path | None = None,
    progress: bool = True,
    precompute_teacher: bool = True,
    should_stop=None,
) -> FitResult:
    """Train and save the adapter to ``out_dir`` (safetensors + resolved config + baseline).

    build → (epoch → validate)* → save. The baseline (the task's frozen-encoder probe) is
    fitted on ``train`` and saved beside the adapter; a new version's head starts from it.
    Training runs ``cfg.epochs`` epochs but at least ``cfg.min_steps`` optimizer steps; early
    stopping (``cfg.patience`` epochs without a better validation loss) applies once the floor
    is reached, and the state with the best validation loss is kept; for a new version the
    untrained start (epoch 0: the probe) is one of the states, so it never ends worse than
    the probe on validation. A retrain always returns a trained state: whether it beats the
    champion is the gate's call. ``should_stop()`` is polled between steps; when it returns
    true, :class:`Stopped` is raised before anything is saved.
    """

    with cpu_threads(spec):  # the task's CPU threads for the whole fit
        folder = (
            out_dir
            if isinstance(out_dir, VersionFolder)
            else VersionFolder(Path(out_dir), Path(out_dir).name)
        )
        clock = _Clock()
        s = _build(FitInputs(spec, labels, train, val, cfg, champion_dir), precompute_teacher, clock)
        history: list[dict[str, Any]] = []
        best, best_epoch, best_state, bad_epochs = -math.inf, 0, None, 0
        if (
            s.val_ds is not None and champion_dir is None
        ):  # a new version may stay at the probe it starts from
            start = {"epoch": 0}
            best = _validate(s, start)
            best_state = _trainable_state(s)
            history.append(start)
            clock.lap("validate")
        started = time.perf_counter()
        bar = tqdm(total=s.total, desc="training", unit="step", disable=not progress, leave=False)
        try:
            for epoch in range(1, s.epochs + 1):
                record = _epoch(s, epoch, bar, started, should_stop)
                clock.lap("train")
                score = _validate(s, record)
                clock.lap("validate")
                history.append(record)
                if score > best:
                    best, best_epoch, bad_epochs = score, epoch, 0
                    best_state = _trainable_state(s)
                else:
                    bad_epochs += 1
                    if bad_epochs > cfg.patience and s.step >= cfg.min_steps:
                        break
        finally:
            bar.close()
        if best_state is not None and best_epoch != history[-1]["epoch"]:
            s.student.load_state_dict(best_state, strict=False)
        kept = _probe_or_trained(s, best_epoch, history)
        seconds = time.perf_counter() - started
        _save(s, folder, history, best_epoch, kept)
        clock.lap("save")
        trained = [h for h in history if h["epoch"] > 0]
        return FitResult(
            folder.path,
            len(trained),
            best_epoch,
            s.step,
            seconds,
            s.seen / seconds if seconds else 0.0,
            history,
            clock.phases,
            kept[0],
        )


def result_dict(result: FitResult) -> dict:
    d = asdict(result)
    d["path"] = str(result.path)
    return d


def version_roles(spec: Learner, labels: list[str], folder: Path, champion_dir: Path | None = None):
    """The models an evaluation of the version in ``folder`` scores: the candidate, the baseline
    saved beside it and, for a retrain, the champion it was trained from."""
    roles = {"champion": load_adapter_model(spec, labels, champion_dir)} if champion_dir else {}
    roles["candidate"] = load_adapter_model(spec, labels, folder)
    roles["baseline"] = spec.load_baseline(labels, folder)
    return roles
