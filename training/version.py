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
    review/               what a reviewer reads: confusion matrix, misclassified examples
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

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
    review_labels: dict[str, int] = field(default_factory=dict)  # reviewer → new samples they labelled

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Lineage:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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

    @classmethod
    def from_dict(cls, d: dict) -> TrainingRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class VersionFolder:
    RUN_ID, CONFIG, LINEAGE, EVAL, GATE, SCREEN = (
        "run_id",
        "training_config.json",
        "data.json",
        "eval.json",
        "gate.json",
        "screen.json",
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
        names = (self.CONFIG, self.LINEAGE, self.GATE, "gate.txt", self.SCREEN, self.EVAL)
        return [self.path / n for n in names if (self.path / n).is_file()]

    def adapter_files(self) -> list[Path]:
        return sorted(self.path.glob("adapter_*"))

    # ---- dataset ---------------------------------------------------------------------

    def save_dataset(self, train, validation, holdouts: dict) -> None:
        data = self.path / "data"
        data.mkdir(exist_ok=True)
        train.to_parquet(data / "train.parquet", index=False)
        validation.to_parquet(data / "validation.parquet", index=False)
        for key, frame in holdouts.items():
            frame.to_parquet(data / f"holdout_{key}.parquet", index=False)

    def dataset(self):
        """(train, validation, holdouts) as saved by :meth:`save_dataset`."""
        import pandas as pd

        data = self.path / "data"
        holdouts = {k: pd.read_parquet(data / f"holdout_{k}.parquet") for k in HOLDOUTS}
        return pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "validation.parquet"), holdouts

    def review_dir(self) -> Path:
        d = self.path / "review"
        d.mkdir(exist_ok=True)
        return d
