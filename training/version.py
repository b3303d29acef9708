"""A run's folder and the files it holds; the only code that reads or writes them.

runs/<run id>/ or versions/v<N>/
    run_id                the run's id (kept when the folder becomes version N)
    adapter_*             the model (written by the task adapter and peft)
    baseline.safetensors  the task's baseline (the linear probe)
    training_config.json  :class:`TrainingRecord`: resolved settings, steps, epochs, device
    data.json             :class:`Lineage`: the data window and sample counts
    gate.json, gate.txt   the data gate's report (``training.data_gate.DataGateReport``)
    eval.json             the evaluation report (``training.evaluate.EvalReport``)
    data/*.parquet        the run's dataset (train, validation, holdouts)
    samples.parquet       :class:`SampleLineage`: every sample id of the dataset and its role
    review/               what a reviewer reads: confusion matrix, misclassified examples
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.files import write_json_atomic
from training.data_gate import DataGateReport
from training.evaluate import EvalReport
from training.screen_report import LabelScreenReport

HOLDOUTS = ("golden", "old", "new")


@dataclass
class Lineage:
    """Where a run's data came from: its window of ingested samples and what was used."""

    window_start: str | None
    window_end: str
    new_samples: int = 0
    new_train: int = 0
    replay: int = 0
    validation: int = 0
    golden: int = 0
    old_holdout: int = 0
    new_holdout: int = 0
    new_left_out: int = 0  # new samples over training.max_new_samples, not trained on this time
    quarantined: int = 0
    flagged: int = 0  # sent to review by the label screen (left out of training)
    bootstrap: bool = False
    champion: int | None = None  # the teacher and the version compared against
    from_base: bool = False  # trained from the base model with no teacher (a retrain after an erasure)
    review_labels: dict[str, int] = field(default_factory=dict)  # reviewer → new samples they labelled

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Lineage:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def erase_rows(paths: list[Path], sample_ids: set[str]) -> int:
    """Rewrite each parquet of ``paths`` that holds rows of ``sample_ids`` without them (a temp
    file, then a rename); return the rows removed."""

    removed = 0
    for path in paths:
        frame = pd.read_parquet(path)
        keep = frame[~frame["sample_id"].isin(sample_ids)]
        if len(keep) < len(frame):
            removed += len(frame) - len(keep)
            tmp = path.with_name(f".{path.name}.tmp")
            keep.to_parquet(tmp, index=False)
            os.replace(tmp, path)
    return removed


ROLES = ("train", "validation", "golden", "old", "new")  # golden, old, new: the holdouts
# a frame without an origin column: the bootstrap's training set, or a split of the window
_DEFAULT_ORIGIN = {"train": "bootstrap", "validation": "new", "golden": "golden", "old": "old", "new": "new"}


@dataclass
class SampleLineage:
    """Per-record lineage of one run: each sample id of its dataset, its role (``ROLES``),
    origin (``new`` window, ``replay`` of old data, ``bootstrap``) and label (when the task
    has classes). Stored sorted, dictionary-encoded and zstd-compressed (a few bytes per id:
    ``bench/bench_forget.py`` measures it)."""

    frame: Any  # DataFrame: sample_id, role, origin, label

    @classmethod
    def of(cls, train, validation, holdouts: dict) -> SampleLineage:

        parts = []
        for role, part in (("train", train), ("validation", validation), *holdouts.items()):
            origin = part.get("origin", _DEFAULT_ORIGIN[role])
            parts.append(
                pd.DataFrame(
                    {
                        "sample_id": part["sample_id"].astype(str).to_numpy(),
                        "role": role,
                        "origin": origin if isinstance(origin, str) else origin.to_numpy(),
                        "label": part["label"].to_numpy() if "label" in part else None,
                    }
                )
            )
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["sample_id"])
        return cls(frame.sort_values(["role", "sample_id"], kind="stable").reset_index(drop=True))

    def save(self, path: Path) -> None:

        table = pa.Table.from_pandas(self.frame, preserve_index=False)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(
            table, tmp, compression="zstd", compression_level=9, use_dictionary=["role", "origin", "label"]
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SampleLineage:

        return cls(pd.read_parquet(path))

    def ids(self, role: str | None = None) -> set[str]:
        frame = self.frame if role is None else self.frame[self.frame["role"] == role]
        return set(frame["sample_id"])

    def digest(self, role: str = "train") -> str:
        """SHA-256 of the sorted ids of ``role``, one per line: equal digests, equal sets."""
        text = "\n".join(sorted(self.ids(role)))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class TrainingRecord:
    """What ``fit`` did: resolved settings, steps, epochs and where it ran."""

    task: str
    labels: list[str]
    base_model: str
    max_length: int | None
    teacher: str | None
    device: str
    training: dict[str, Any]
    samples: dict[str, int]
    steps: int
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    kept: str = "trained"  # "trained", or "probe": fine-tuning did not beat the probe on validation
    kept_because: str | None = None  # why the probe was kept (the validation losses), for the verdict

    @classmethod
    def from_dict(cls, d: dict) -> TrainingRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class VersionFolder:
    RUN_ID, CONFIG, LINEAGE, EVAL, GATE, SCREEN, SAMPLES = (
        "run_id",
        "training_config.json",
        "data.json",
        "eval.json",
        "gate.json",
        "screen.json",
        "samples.parquet",
    )

    def __init__(self, path: Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id

    @classmethod
    def create(cls, path: Path, run_id: str) -> VersionFolder:
        """A new run's folder, recording its run id (which stays when it becomes version N)."""
        path.mkdir(parents=True)
        (path / cls.RUN_ID).write_text(run_id)
        return cls(path, run_id)

    @classmethod
    def run_id_of(cls, path: Path) -> str:
        f = Path(path) / cls.RUN_ID
        return f.read_text().strip() if f.is_file() else Path(path).name

    def __repr__(self) -> str:
        return f"VersionFolder({str(self.path)!r})"

    # ---- lineage, training record ------------------------------------------------------

    def save_lineage(self, lineage: Lineage) -> None:
        write_json_atomic(self.path / self.LINEAGE, lineage.to_dict(), indent=2, default=str)

    def lineage(self) -> Lineage:
        return Lineage.from_dict(json.loads((self.path / self.LINEAGE).read_text()))

    def save_training_record(self, record: dict) -> None:
        write_json_atomic(self.path / self.CONFIG, record, indent=2, default=str)

    def training_record(self) -> TrainingRecord:
        return TrainingRecord.from_dict(json.loads((self.path / self.CONFIG).read_text()))

    # ---- reports -----------------------------------------------------------------------

    def save_report(self, report) -> None:
        write_json_atomic(self.path / self.EVAL, report.to_dict(), indent=2, default=str)

    def report(self):
        return EvalReport.from_dict(json.loads((self.path / self.EVAL).read_text()))

    def has_report(self) -> bool:
        return (self.path / self.EVAL).is_file()

    def save_data_gate(self, report) -> None:
        write_json_atomic(self.path / self.GATE, report.to_dict(), indent=2, default=str)
        (self.path / "gate.txt").write_text(report.text() + "\n")

    def data_gate(self):
        return DataGateReport.from_dict(json.loads((self.path / self.GATE).read_text()))

    def save_label_screen(self, report) -> None:
        write_json_atomic(self.path / self.SCREEN, report.to_dict(), indent=2, default=str)

    def label_screen(self):
        """The label screen's report (``training.label_screen``), or None for a run without one."""

        path = self.path / self.SCREEN
        return LabelScreenReport.from_dict(json.loads(path.read_text())) if path.is_file() else None

    def artifacts(self) -> list[Path]:
        """The run's records, logged with it to MLflow."""
        names = (self.CONFIG, self.LINEAGE, self.GATE, "gate.txt", self.SCREEN, self.EVAL, self.SAMPLES)
        return [self.path / n for n in names if (self.path / n).is_file()]

    def adapter_files(self) -> list[Path]:
        return sorted(self.path.glob("adapter_*"))

    # ---- dataset ---------------------------------------------------------------------

    def save_dataset(self, train, validation, holdouts: dict) -> None:
        """The dataset's frames, and its per-record lineage (``samples.parquet``) beside them."""
        data = self.path / "data"
        data.mkdir(exist_ok=True)
        train.to_parquet(data / "train.parquet", index=False)
        validation.to_parquet(data / "validation.parquet", index=False)
        for key, frame in holdouts.items():
            frame.to_parquet(data / f"holdout_{key}.parquet", index=False)
        SampleLineage.of(train, validation, holdouts).save(self.path / self.SAMPLES)

    def _erase_examples(self, sample_ids: set[str]) -> int:
        """Examples (sample id, shown text) of erased samples out of gate.json, gate.txt and
        screen.json; returns how many were dropped. The per-record lineage loses their labels."""
        dropped = 0
        if (self.path / self.GATE).is_file():
            gate = self.data_gate()
            keep = [e for e in gate.quarantine.examples if e.get("sample_id") not in sample_ids]
            if len(keep) < len(gate.quarantine.examples):
                dropped += len(gate.quarantine.examples) - len(keep)
                gate.quarantine.examples = keep
                self.save_data_gate(gate)
        screen = self.label_screen()
        if screen is not None:
            keep = [e for e in screen.examples if e.get("sample_id") not in sample_ids]
            if len(keep) < len(screen.examples):
                dropped += len(screen.examples) - len(keep)
                screen.examples = keep
                self.save_label_screen(screen)
        lineage = self.sample_lineage()
        if lineage is not None and lineage.frame["sample_id"].isin(sample_ids).any():
            frame = lineage.frame.copy()
            frame.loc[frame["sample_id"].isin(sample_ids), "label"] = None
            SampleLineage(frame).save(self.path / self.SAMPLES)
        return dropped

    def sample_lineage(self) -> SampleLineage | None:
        """Every sample id of the run's dataset and its role (None for a run made before it was kept)."""
        path = self.path / self.SAMPLES
        return SampleLineage.load(path) if path.is_file() else None

    def erase_samples(self, sample_ids: set[str]) -> int:
        """Erasure: rewrite the dataset frames without ``sample_ids`` (each file atomically),
        and the data gate's and label screen's reports without their examples of them; the
        lineage keeps the ids (not their labels), so which versions learned from them stays
        known. Returns the rows removed."""

        self._erase_examples(sample_ids)
        return erase_rows(sorted((self.path / "data").glob("*.parquet")), sample_ids)

    def dataset(self):
        """(train, validation, holdouts) as saved by :meth:`save_dataset`."""

        data = self.path / "data"
        holdouts = {k: pd.read_parquet(data / f"holdout_{k}.parquet") for k in HOLDOUTS}
        return pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "validation.parquet"), holdouts

    def review_dir(self) -> Path:
        d = self.path / "review"
        d.mkdir(exist_ok=True)
        return d
