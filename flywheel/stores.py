"""Creating or migrating a store under the state dir: once, by whichever process comes first.

Two processes starting on a fresh state dir (two API replicas on one volume, ``serve`` beside
a cron ``retrain``) used to run MLflow's schema migrations on the same SQLite file at once,
and one died (``duplicate column name: step``). Every store that is created or migrated on
first use goes through :func:`prepare`: a file lock per store under ``<state_dir>/locks``,
and a marker naming the version that prepared it, so later processes skip the lock entirely.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flywheel.errors import FlywheelError


class StoreBusy(FlywheelError):
    """Another process held a store's preparation lock for too long."""

    exit_code = 7


def _locks(state_dir: str | Path) -> Path:
    folder = Path(state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def store_lock(state_dir: str | Path, name: str, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold ``<state_dir>/locks/<name>.lock`` (waiting up to ``timeout_s`` for another process)."""
    path = _locks(state_dir) / f"{name}.lock"
    with open(path, "a+b") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"another process has been preparing the {name} store for {timeout_s:.0f}s "
                        f"(lock {path}); if none runs, remove the lock file and retry"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
