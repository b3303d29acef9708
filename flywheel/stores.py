"""Creating or migrating a store under the state dir: once, by whichever process comes first.

Two processes starting on a fresh state dir (two API replicas on one volume, ``serve`` beside
a cron ``retrain``) used to run MLflow's schema migrations on the same SQLite file at once,
and one died (``duplicate column name: step``). Every store that is created or migrated on
first use goes through :func:`prepare`: a file lock per store under ``<state_dir>/locks``,
and a marker naming the version that prepared it, so later processes skip the lock entirely.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flywheel.locks import file_lock


def store_lock(state_dir: str | Path, name: str, timeout_s: float = 600.0):
    """Hold ``<state_dir>/locks/<name>.lock`` (``flywheel.locks.file_lock``: LockBusy after
    ``timeout_s`` of another process holding it)."""
    return file_lock(_locks(state_dir) / f"{name}.lock", timeout_s)


def _locks(state_dir: str | Path) -> Path:
    folder = Path(state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prepare(state_dir: str | Path, name: str, version: str, create: Callable[[], None]) -> bool:
    """Run ``create`` (make or migrate the store ``name``) unless a process already did for
    ``version``; concurrent callers wait for the first. Returns True when this call ran it."""
    marker = _locks(state_dir) / f"{name}.ready"
    if _marked(marker) == version:
        return False
    with store_lock(state_dir, name):
        if _marked(marker) == version:
            return False  # prepared while we waited
        create()
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
        tmp.write_text(version + "\n")
        os.replace(tmp, marker)
        return True


def _marked(marker: Path) -> str | None:
    try:
        return marker.read_text().strip()
    except FileNotFoundError:
        return None
