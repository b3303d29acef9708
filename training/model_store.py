"""A model's local store: what it predicts, its golden set, its runs and versions, its state.

The paths are :class:`flywheel.layout.StateLayout`'s. This module is the only writer of a
model's ``model.json`` and ``state.json``; the state changes only through the operations
below, each named for what happened (a decision begun or completed, a window the data gate
refused), each a read-modify-write under the model's state lock and an atomic, fsynced write.

The MLflow registry (orchestration) is the authority on which version serves; it journals
each alias move here before making it (``begin_decision``) and completes it here last
(``complete_decision``), so ``Registry.repair`` can finish a move a crash interrupted, and
training finds the teacher offline. A version's number is its MLflow version number: a run
trains in ``runs/<run id>/`` and becomes ``versions/v<N>/`` when MLflow registers it as N.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from flywheel.errors import FlywheelError
from flywheel.files import write_json_atomic
from flywheel.layout import StateLayout
from flywheel.locks import file_lock
from flywheel.model_info import ModelInfo, ModelNotFound, model_names, read_model_info
from training.version import VersionFolder, erase_rows

__all__ = ["Decision", "ModelInfo", "ModelNotFound", "ModelState", "ModelStore", "Window"]


@dataclass(frozen=True)
class Window:
    """A window of ingested samples, ``(start, end]``; ``start`` None is "from the beginning"."""

    start: str | None
    end: str
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, d) -> Window:
        if isinstance(d, list | tuple):  # written as [start, end] before the reasons were kept
            return cls(d[0], d[1])
        return cls(d.get("start"), d["end"], tuple(d.get("reasons", ())))


@dataclass(frozen=True)
class Decision:
    """An alias move under way: written before the first MLflow call, cleared by the last step.

    ``action`` promote | reject | stale (a registered candidate's verdict), force-promote (an
    engineer past the gate), rollback (by hand) or auto-rollback (the live monitor);
    ``window`` is the candidate's training window for a retrain (None for a bootstrap or
    an alias move by hand or by the monitor); ``evidence`` what an automatic move was
    decided on (JSON data, kept in the history).
    """

    id: str
    action: str
    version: int
    champion_before: int | None
    reasons: tuple[str, ...] = ()
    window: Window | None = None
    evidence: dict | None = None

    @property
    def moves_champion(self) -> bool:
        return self.action in CHAMPION_MOVES

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["window"] = self.window.to_dict() if self.window else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Decision:
        window = Window.from_dict(d["window"]) if d.get("window") else None
        return cls(
            d["id"],
            d["action"],
            d["version"],
            d.get("champion_before"),
            tuple(d["reasons"]),
            window,
            d.get("evidence"),
        )


CHAMPION_MOVES = ("promote", "force-promote", "rollback", "auto-rollback")  # actions that move `champion`


@dataclass
class ModelState:
    """``state.json``: read by anyone, written only through :class:`ModelStore`."""

    champion: int | None = None
    watermark: str | None = None  # samples ingested up to here are consumed by a decided run
    rejected_windows: list[Window] = field(default_factory=list)  # promotion gate said no
    data_rejected: list[Window] = field(default_factory=list)  # the data gate refused the batch
    decision: Decision | None = None
    flagged: list[str] = field(default_factory=list)  # sample ids the label screen sent to review

    @property
    def excluded_windows(self) -> list[Window]:
        """Windows never replayed into later training."""
        return [*self.rejected_windows, *self.data_rejected]

    def watermark_time(self) -> datetime | None:
        return datetime.fromisoformat(self.watermark) if self.watermark else None

    def to_dict(self) -> dict:
        return {
            "champion": self.champion,
            "watermark": self.watermark,
            "rejected_windows": [w.to_dict() for w in self.rejected_windows],
            "data_rejected": [w.to_dict() for w in self.data_rejected],
            "decision": self.decision.to_dict() if self.decision else None,
            "flagged": self.flagged,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelState:
        return cls(
            champion=d.get("champion"),
            watermark=d.get("watermark"),
            rejected_windows=[Window.from_dict(w) for w in d.get("rejected_windows", [])],
            data_rejected=[Window.from_dict(w) for w in d.get("data_rejected", [])],
            decision=Decision.from_dict(d["decision"]) if d.get("decision") else None,
            flagged=list(d.get("flagged", [])),
        )


def _later(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return max(a, b, key=datetime.fromisoformat)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


class ModelStore:
    def __init__(self, state_dir: str | Path):
        self.layout = StateLayout.of(state_dir)

    def dir(self, name: str) -> Path:
        return self.layout.model(name)

    def exists(self, name: str) -> bool:
        return self.layout.model_info(name).is_file()

    def names(self) -> list[str]:
        return model_names(self.layout.root)

    def create(self, info: ModelInfo, golden, bootstrap, watermark: datetime) -> None:
        d = self.dir(info.name)
        if self.exists(info.name):
            state = self.state(info.name)
            if state.champion is not None or state.decision is not None:
                raise FlywheelError(f"model {info.name!r} already exists in {d}; choose another name")
            # Its first version never became champion (rejected, or the bootstrap crashed before
            # registering): bootstrapping it again replaces its golden set, data and state.
        self.layout.versions(info.name).mkdir(parents=True, exist_ok=True)
        golden.to_parquet(self.layout.golden(info.name), index=False)
        bootstrap.to_parquet(self.layout.bootstrap_data(info.name), index=False)
        self._write(info.name, ModelState(watermark=watermark.isoformat()))
        write_json_atomic(
            self.layout.model_info(info.name), asdict(info), indent=2
        )  # last: it marks "exists"

    def info(self, name: str) -> ModelInfo:
        return read_model_info(self.layout.root, name)

    def golden(self, name: str):

        return pd.read_parquet(self.layout.golden(name))

    def bootstrap_data(self, name: str):

        return pd.read_parquet(self.layout.bootstrap_data(name))

    def erase_samples(self, name: str, sample_ids: set[str]) -> int:
        """Erasure: the golden set and the bootstrap data without ``sample_ids`` (each file
        rewritten atomically, only when it holds one); returns the rows removed."""
        return erase_rows([self.layout.golden(name), self.layout.bootstrap_data(name)], sample_ids)

    def image_uris(self, name: str, columns: tuple[str, ...], skip: set[str]) -> set[str]:
        """The image URIs the model's golden set, bootstrap data and run datasets name, for
        samples other than ``skip`` (erasure keeps an image another sample still names)."""

        paths = [self.layout.golden(name), self.layout.bootstrap_data(name)]
        for folder in self.folders(name):
            paths += sorted((folder.path / "data").glob("*.parquet"))
        found: set[str] = set()
        for path in paths:
            if not path.is_file():
                continue
            frame = pd.read_parquet(path)
            frame = frame[~frame["sample_id"].isin(skip)] if "sample_id" in frame else frame
            for column in columns:
                if column in frame:
                    found.update(u for u in frame[column].dropna().unique() if isinstance(u, str))
        return found

    def folders(self, name: str) -> list[VersionFolder]:
        """Every run and version folder of ``name`` (versions first, by number)."""
        found = [self.version(name, n) for n in self.versions(name)]
        runs = self.layout.runs(name)
        if runs.is_dir():
            found += [
                VersionFolder(p, VersionFolder.run_id_of(p)) for p in sorted(runs.iterdir()) if p.is_dir()
            ]
        return found

    # ---- runs and versions ---------------------------------------------------------

    def new_run(self, name: str) -> VersionFolder:
        """A folder for a run that is about to be trained (no version number yet)."""
        self.info(name)
        run_id = new_run_id()
        return VersionFolder.create(self.layout.run(name, run_id), run_id)

    def adopt(self, name: str, run_id: str, number: int) -> VersionFolder:
        """The run ``run_id`` became MLflow version ``number``: move its folder to ``versions/v<N>``.
        Idempotent (a repair may call it again after a crash)."""
        source, target = self.layout.run(name, run_id), self.layout.version(name, number)
        if source.is_dir() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        if not target.is_dir():
            raise FlywheelError(
                f"version folder {target} is missing and run {run_id} is not in {source.parent}"
            )
        held = VersionFolder.run_id_of(target)
        if held != run_id:
            raise FlywheelError(
                f"{target} holds run {held}, not run {run_id} that MLflow registered as v{number}: the "
                "MLflow store and this state dir disagree (was one of them reset?); point them at each other"
            )
        return VersionFolder(target, run_id)

    def version(self, name: str, number: int) -> VersionFolder:
        path = self.layout.version(name, number)
        if not path.is_dir():
            raise FlywheelError(f"{name} v{number} has no folder {path} on this machine")
        return VersionFolder(path, VersionFolder.run_id_of(path))

    def version_dir(self, name: str, number: int) -> Path:
        return self.layout.version(name, number)

    def versions(self, name: str) -> list[int]:
        found = (p.parent.name for p in self.layout.versions(name).glob("v*/adapter_config.json"))
        return sorted(int(n[1:]) for n in found if n[1:].isdigit())

    # ---- state: read -----------------------------------------------------------------

    def state(self, name: str) -> ModelState:
        self.info(name)
        return ModelState.from_dict(json.loads(self.layout.model_state(name).read_text()))

    def champion(self, name: str) -> int | None:
        return self.state(name).champion

    def watermark(self, name: str) -> datetime | None:
        return self.state(name).watermark_time()

    # ---- state: the operations that change it ----------------------------------------

    def begin_decision(self, name: str, decision: Decision) -> None:
        """Journal an alias move before it starts; refuses while another one is unfinished."""
        with self._changing(name) as state:
            if state.decision is not None and state.decision.id != decision.id:
                raise FlywheelError(
                    f"{name}: decision {state.decision.id} ({state.decision.action} "
                    f"v{state.decision.version}) is unfinished; run `flywheel model repair {name}`"
                )
            state.decision = decision

    def complete_decision(self, name: str, decision: Decision) -> None:
        """The move's last step: the champion, watermark and windows it implies, journal cleared."""
        with self._changing(name) as state:
            if state.decision is None or state.decision.id != decision.id:
                return  # already completed
            if decision.moves_champion:
                state.champion = decision.version
            if decision.window is not None:
                state.watermark = _later(state.watermark, decision.window.end)
                if decision.action == "reject":
                    state.rejected_windows.append(decision.window)
            state.decision = None

    def abandon_decision(self, name: str, decision: Decision) -> None:
        """Clear a journalled move that can never complete (its version is gone); nothing else changes."""
        with self._changing(name) as state:
            if state.decision is not None and state.decision.id == decision.id:
                state.decision = None

    def record_data_rejected(self, name: str, window: Window) -> None:
        """The data gate refused the window as a whole: it is consumed, and never replayed."""
        with self._changing(name) as state:
            state.watermark = _later(state.watermark, window.end)
            state.data_rejected.append(window)

    def record_flagged(self, name: str, sample_ids: list[str]) -> None:
        """Samples the label screen sent to review: never trained on nor replayed (the
        reviewers' answer comes back as a new sample, ``<id>.review``)."""
        with self._changing(name) as state:
            known = set(state.flagged)
            state.flagged += [i for i in dict.fromkeys(sample_ids) if i not in known]

    @contextmanager
    def _changing(self, name: str):
        with file_lock(self.layout.model_state_lock(name), timeout_s=None):
            state = self.state(name)
            yield state
            self._write(name, state)

    def _write(self, name: str, state: ModelState) -> None:
        write_json_atomic(self.layout.model_state(name), state.to_dict(), indent=2, default=str)
