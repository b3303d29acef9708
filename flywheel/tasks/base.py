"""The task spec: everything a task knows, behind one interface.

A spec owns its sample columns and Feast fields, what counts as a training sample, the data
gate's per-sample checks and batch expectations, the model (built from a checkpoint or a
config), the encoding of samples as a torch ``Dataset`` read sample by sample, the task and
distillation losses, the metrics, serving's pre- and post-processing, the review note's
artifacts, and the default promotion guards and first-version floors.

The trainer, evaluator, data gate, dataset builder, ingestor, registry, serving and review
note call these methods and never branch on the task. Register a spec with
``flywheel.tasks.register``; a spec is built from the settings with ``spec_for``.

Heavy libraries (torch, transformers, peft) are imported inside methods.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from flywheel.errors import DataError
from flywheel.lazy import lazy_import
from flywheel.tasks.label_checks import LabelFlags
from flywheel.tasks.protocols import Learner

pd = lazy_import("pandas")

BASELINE_FILE = "baseline.safetensors"


class TaskSpec:
    """The interface (see the module docstring). ``batch`` is a dict of tensors (``collate``)."""

    name: ClassVar[str]
    lora_targets: ClassVar[list[str]]
    modules_to_save: ClassVar[list[str]] = []
    primary_metric: ClassVar[str]
    primary_direction: ClassVar[Literal["max", "min"]] = "max"  # is a higher primary metric better?
    shown_metrics: ClassVar[tuple[str, ...]]  # the review table's metrics, the primary first
    sample_columns: ClassVar[list[str]]  # a training sample's columns besides sample_id, confidence
    feast_fields: ClassVar[dict[str, str]]  # Feast feature → Feast type name this task fills
    image_columns: ClassVar[tuple[str, ...]] = ()  # Feast columns naming image-store URIs (erasure)
    strata: ClassVar[str | None] = None  # the column samples are stratified by (None: plain hash)
    cache_teacher: ClassVar[bool] = True  # teacher outputs small enough to compute once per fit
    baseline_caption: ClassVar[str] = "baseline"
    serving_input: ClassVar[str]  # the column ``models:/NAME@champion`` predicts from
    serving_output: ClassVar[str]  # the column its predictions always have
    default_min_new_samples: ClassVar[int] = 1000  # new samples that trigger a retrain (unset setting)
    cpu_threads: ClassVar[int | None] = None  # torch threads on a CPU (None: torch's default)
    review_files: ClassVar[tuple[str, ...]] = ()  # what review_artifacts writes
    live_metric: ClassVar[str]  # what the live monitor compares, per labelled prediction
    live_tolerance: ClassVar[float]  # the live drop allowed by default (monitor.tolerance unset)
    live_unit: ClassVar[str] = ""  # how a live value is shown (" dB")
    live_direction: ClassVar[Literal["max", "min"]] = "max"  # is a higher live value better?

    @classmethod
    def from_settings(cls, settings) -> TaskSpec:
        return cls()

    # ---- data ---------------------------------------------------------------------

    @classmethod
    def feast_columns(cls, record, images) -> dict[str, Any]:
        """This task's Feast fields of a clean routed record (``images``: the image store)."""
        raise NotImplementedError

    def is_sample(self, frame):
        """A boolean Series: the rows that are training samples (verified answer present)."""
        raise NotImplementedError

    def class_counts(self, frame, labels: list[str]) -> dict[str, int]:
        """Samples per class for the readiness check (empty for a task without classes)."""
        return {}

    def load_samples(self, path: Path):
        """A user's bootstrap or golden file as samples: ``sample_id`` + ``sample_columns``."""
        raise NotImplementedError

    def labels_of(self, frame) -> list[str]:
        """The label set a new model gets from its bootstrap data (empty: no classes)."""
        return []

    def quarantine_reasons(self, frame, labels: list[str], gate, mark) -> None:
        """Per-sample data-gate checks: ``mark(mask, reason)`` for each (first reason wins)."""

    def shown_example(self, row) -> dict[str, Any]:
        """What a quarantine report shows of a sample (short values, never image bytes)."""
        return {}

    def expectations(self, frame, labels: list[str], gate) -> list[Suite]:
        """The Great Expectations suites the data gate runs on a batch, each with the frame it
        runs on (for example per sample, and the batch's class balance)."""
        raise NotImplementedError

    def dataset(self, frame, labels: list[str]):
        """A torch Dataset of ``frame``'s samples, encoded one at a time when read."""
        raise NotImplementedError

    # ---- model ----------------------------------------------------------------------

    def build(self, labels: list[str], version_dir: Path | None = None):
        """The base model: a new version's (``version_dir`` None), or the one saved there."""
        raise NotImplementedError

    def save_architecture(self, model, folder: Path) -> None:
        """Write beside the adapter what ``build`` needs to rebuild ``model``'s base."""

    def fit_baseline(self, data, labels: list[str], seed: int = 0):
        """The baseline every evaluation reports (a model), or None when the task has none."""
        return None

    def init_from_baseline(self, model, baseline) -> None:
        """Start a new version's trainable model where the baseline is (default: no change)."""

    def save_baseline(self, baseline, folder: Path) -> None:
        """Write the baseline beside the version (default: nothing; ``load_baseline`` rebuilds it)."""

    def load_baseline(self, labels: list[str], folder: Path):
        """The baseline saved in ``folder``, or None when there is none."""
        return None

    def freeze_lower_layers(self, model, top: int) -> int:
        """Leave only the top ``top`` layers of ``model`` trainable (and its head); returns the
        first trained layer, 0 when nothing was frozen (default: the task trains every layer)."""
        return 0

    def cache_frozen(self, model, dataset, batch_size: int, device):
        """``dataset`` with the frozen layers' outputs computed once per sample (in eval mode, no
        gradients), which ``forward`` accepts in place of the samples. Called only after
        ``freeze_lower_layers`` froze something."""
        raise NotImplementedError(f"{self.name} freezes no layers, so it has nothing to cache")

    def forward(self, model, batch: dict):
        raise NotImplementedError

    def task_loss(self, outputs, batch: dict):
        raise NotImplementedError

    def distill_loss(self, outputs, teacher_outputs, temperature: float):
        raise NotImplementedError

    # ---- metrics --------------------------------------------------------------------

    def evidence(self, outputs, batch: dict) -> dict[str, list]:
        """Per-sample values of one batch that ``metrics`` and ``per_sample`` are computed from."""
        raise NotImplementedError

    def metrics(self, evidence: dict[str, list], labels: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def per_sample(self, evidence: dict[str, list]) -> dict[str, list[float]]:
        """Per-sample values of the metrics a paired test compares."""
        return {}

    # ---- promotion ------------------------------------------------------------------

    @classmethod
    def default_guards(cls) -> list:
        """``flywheel.settings.Guard`` list used when the settings configure none for the task."""
        return []

    @classmethod
    def default_floors(cls) -> dict[str, float]:
        """'holdout.metric' → the minimum a first version must reach (unset in the settings)."""
        return {}

    @classmethod
    def baseline_guard(cls, rules, metric: str):
        """The paired guard of a candidate against the baseline (``rules``: BaselineGuard),
        in the primary metric's direction."""
        guard = rules.guard(metric)
        return (
            guard.model_copy(update={"direction": cls.primary_direction})
            if metric == cls.primary_metric
            else guard
        )

    @classmethod
    def default_baseline_gain(cls) -> float | None:
        """How much a first version must beat the baseline by on its mean (None: no such rule)."""
        return None

    @classmethod
    def default_ratchet_budget(cls) -> float | None:
        """How far below the best promoted version's golden score (primary metric) any
        candidate may be, in all (``orchestration.promotion``, the ratchet). None: no ratchet."""
        return None

    # ---- serving and review ---------------------------------------------------------

    def serving_meta(self, record) -> dict:
        """What ``from_serving_meta`` needs to rebuild this spec where the version is served
        (``record``: the version's TrainingRecord); JSON data."""
        return {}

    @classmethod
    def from_serving_meta(cls, meta: dict) -> TaskSpec:
        return cls()

    def serve(self, model, model_input, labels: list[str]):
        """Predictions (a DataFrame) for a DataFrame with the ``serving_input`` column."""
        raise NotImplementedError

    def serving_example(self, golden):
        """A small DataFrame the registry's smoke test predicts (from the golden set)."""
        raise NotImplementedError

    @classmethod
    def serving_frame(cls, inputs: list) -> Any:
        """The DataFrame ``serve`` predicts from, for validated ``flywheel.events.Input`` objects."""

        return pd.DataFrame({cls.serving_input: [getattr(i, cls.serving_input) for i in inputs]})

    @classmethod
    def serving_smoke(cls) -> Any:
        """One input ``serve`` must answer (a version is smoke-tested on it before it serves)."""
        raise NotImplementedError

    @classmethod
    def answer(cls, row: dict[str, Any]) -> dict[str, Any]:
        """One row of ``serve``'s output as the feedback contract's ``prediction`` object."""
        raise NotImplementedError

    @classmethod
    def live_value(cls, record) -> float | None:
        """The live metric of one labelled prediction (a ``pipelines.records.RoutedRecord``
        joined to its prediction): None when the record has no prediction or no verified answer."""
        raise NotImplementedError

    def review_artifacts(self, report, roles: dict, golden, folder: Path) -> list[Path]:
        """Files for the review note (plots, examples) written into ``folder``."""
        return []

    # ---- labels screened before training (training.label_screen) ----------------------

    def screen_labels(self, champion, frame, labels: list[str], golden):
        """Why each row's label (or target) looks wrong, judged before training with the
        champion and the golden set (``flywheel.tasks.label_checks.LabelFlags``); by default
        nothing is flagged."""

        return LabelFlags.none(len(frame))

    def flag_artifacts(self, champion, flagged, folder: Path) -> list[Path]:
        """Files showing a few flagged samples (``flagged``: their rows) for the review note,
        written into ``folder``; by default none (the note lists examples in text)."""
        return []

    def flagged_event(self, row, model_name: str, suggested) -> dict[str, Any] | None:
        """A flagged sample as an unlabelled feedback event for the review queue (its event id
        the sample id, so the reviewers' answer is ``<id>.review``), or None when the task
        cannot show one: a spec whose ``screen_labels`` flags must implement it (the retrain
        fails rather than leave out a sample no reviewer will see)."""
        return None

    # ---- human review (the review queue and its page) ------------------------------

    @classmethod
    def review_choices(cls, labels: list[str]) -> list[str]:
        """The answers a reviewer picks from, in order (keys 1-9 on the page)."""
        return list(labels)

    @classmethod
    def review_feedback(cls, answer: str) -> dict[str, Any]:
        """A reviewer's answer (one of ``review_choices``) as the event's ``feedback`` object."""
        return {"label": answer}

    @classmethod
    def review_uncertainty(cls, record) -> float:
        """How unsure the model was of a review item (a RoutedRecord); the most unsure is
        reviewed first. By default 1 - the prediction's confidence."""
        confidence = record.confidence
        return 1.0 - confidence if confidence is not None else 0.0

    @classmethod
    def review_view(cls, record) -> dict[str, Any]:
        """What the review page shows of an item: ``text``, ``images`` (caption + PNG base64)
        and the model's answer in words (``prediction``)."""
        return {"text": record.text, "images": [], "prediction": record.prediction_label}


# ---- helpers the specs, the trainer and the evaluator share ----------------------------


def read_table(path: str | Path, needs: str):
    """A JSONL or CSV file as a DataFrame, with ``sample_id`` from a ``sample_id``/``id`` column
    or made from the file name and line; ``needs`` says what the file must hold (for errors)."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is not a file; give a JSONL or CSV file with {needs}")
    try:
        if path.suffix in (".jsonl", ".json"):
            # lines end at "\n" only: str.splitlines also splits inside JSON strings holding
            # U+0085 or U+2028 (as tweets do), which JSON leaves unescaped
            lines = path.read_text().split("\n")
            frame = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{path}: unknown file type {path.suffix!r}; use .jsonl or .csv")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); it must be UTF-8 JSONL or CSV") from exc
    ids = frame["sample_id"] if "sample_id" in frame else frame.get("id")
    frame["sample_id"] = (
        ids.astype(str) if ids is not None else [f"{path.stem}-{i}" for i in range(len(frame))]
    )
    if not frame["sample_id"].is_unique:
        raise DataError(f"{path}: sample ids are not unique")
    return frame


class Suite:
    """Great Expectations rows to run on ``frame``; ``explain(check)`` enriches a failed check."""

    def __init__(self, frame, expectations: list, explain=None):
        self.frame, self.expectations, self.explain = frame, expectations, explain


def shown(value, limit: int) -> str | None:
    """A value as an example in a report: None for a missing one, else its text, cut."""

    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # a list or array: not a scalar, shown as text
        pass
    return str(value)[:limit]


def pick_device():
    """(device, autocast dtype): CUDA with bf16 autocast when present, else CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), None


@contextmanager
def cpu_threads(spec: Learner):
    """torch's intra-op threads set to the spec's ``cpu_threads`` for the block (on a CPU).

    A small network's ops are too small to split: two threads spin-wait on each other, and
    beside a busy JVM (the stream job) a step measured 50x slower than on one thread."""
    import torch

    before = torch.get_num_threads()
    wanted = spec.cpu_threads
    if wanted is not None and not torch.cuda.is_available():
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def collate(items: list[dict]) -> dict:
    import torch

    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def batches(dataset, size: int, order=None):
    """(indices, collated batch) over ``dataset`` in ``order`` (default: as stored), ``size`` at a
    time; a dataset with a ``batch(indices)`` method collates itself (one gather per tensor)."""
    idx = list(order if order is not None else range(len(dataset)))
    fast = getattr(dataset, "batch", None)
    for start in range(0, len(idx), size):
        sel = idx[start : start + size]
        yield sel, fast(sel) if fast is not None else collate([dataset[i] for i in sel])


def length_buckets(order: list[int], lengths: list[int], size: int, generator, pool: int = 16) -> list[int]:
    """``order`` (already shuffled) rearranged into batches of similar length: cut into pools of
    ``pool`` batches, each pool sorted by length and cut into batches of ``size``, then the full
    batches shuffled (a short last batch stays last, so ``batches`` cuts the same batches)."""
    import torch

    full: list[list[int]] = []
    short: list[int] = []
    for start in range(0, len(order), size * pool):
        chunk = sorted(order[start : start + size * pool], key=lambda i: lengths[i])
        for cut in range(0, len(chunk), size):
            part = chunk[cut : cut + size]
            if len(part) == size:
                full.append(part)
            else:
                short += part
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for part in shuffled for i in part] + short


def inference_order(dataset) -> list[int] | None:
    """The order to run inference in: longest first when the dataset knows its samples'
    lengths (a batch is padded to its longest sample), else None (as stored)."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        return None
    sizes = lengths()
    return sorted(range(len(sizes)), key=lambda i: -sizes[i])


def predict(spec: Learner, model, dataset, size: int = 128, device=None):
    """Outputs of ``model`` on a dataset, in eval mode, without gradients (on the CPU), one row
    per sample in the dataset's order."""
    import torch

    device = device or pick_device()[0]
    model.eval()
    model.to(device)
    order = inference_order(dataset)
    outs = []
    with torch.inference_mode():
        for _, b in batches(dataset, size, order):
            outs.append(spec.forward(model, {k: v.to(device) for k, v in b.items()}).float().cpu())
    if not outs:
        return torch.empty(0)
    out = torch.cat(outs)
    if order is not None:
        out[torch.tensor(order)] = out.clone()
    return out


def evidence_of(
    spec: Learner, model, dataset, size: int = 128, device=None, loss: bool = False
) -> tuple[dict[str, list], float | None]:
    """(``spec.evidence`` of ``model`` over a whole dataset, and with ``loss`` the mean task
    loss), batch by batch: outputs are not kept."""
    import torch

    device = device or pick_device()[0]
    model.eval()
    model.to(device)
    found: dict[str, list] = {}
    total = 0.0
    order = inference_order(dataset)
    with torch.inference_mode():
        for sel, b in batches(dataset, size, order):
            b = {k: v.to(device) for k, v in b.items()}
            out = spec.forward(model, b).float()
            if loss:
                total += float(spec.task_loss(out, b)) * len(sel)
            for key, values in spec.evidence(out.cpu(), {k: v.cpu() for k, v in b.items()}).items():
                found.setdefault(key, []).extend(values)
    if order is not None:  # back to the dataset's order: one value per sample
        for key, values in found.items():
            restored: list = [None] * len(values)
            for position, index in enumerate(order):
                restored[index] = values[position]
            found[key] = restored
    return found, (total / len(dataset) if loss and len(dataset) else None)
