"""File locks across processes (``flock``), in the three shapes Flywheel needs.

- ``file_lock(path, timeout_s)``: wait for the lock, hold it for a block (a retrain, an
  alias move, a store's preparation); ``LockBusy`` after ``timeout_s``.
- ``try_lock(path)``: take it now or not at all; the returned file holds it until closed (a
  process-lifetime lock: the supervisor, a journal writer, a JVM's temp folder) and the
  ``tried`` context manager does the same for a block (the settler, the review worker).
- ``held_elsewhere(path)``: whether another process holds it (a journal writer alive?).

A lock dies with its process, however it dies; that is what makes each of them safe
against kill -9. One lock per open of the file: a process must not take one it holds.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from flywheel.errors import FlywheelError


class LockBusy(FlywheelError):
    """Another process holds the lock (a retrain, an alias move or a state change is under way)."""

    exit_code = 7


def try_lock(path: Path, mode: str = "a") -> IO | None:
    """``path`` opened and locked (exclusive) if nobody else holds it, else None. The lock
    lasts as long as the returned file stays open."""
    f = open(path, mode)  # noqa: SIM115 - returned open: the lock lives as long as the file
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    except OSError:
        f.close()  # e.g. no locks on this filesystem: the caller hears why, with nothing left open
        raise
    return f


@contextmanager
def tried(path: Path) -> Iterator[bool]:
    """Hold the lock for the block if it is free now: yields True, or False when another
    process holds it (the block then runs without it and should do nothing)."""
    f = try_lock(path)
    try:
        yield f is not None
    finally:
        if f is not None:
            f.close()


@contextmanager
def file_lock(path: Path, timeout_s: float | None = 600) -> Iterator[None]:
    """Hold the lock for the block, waiting for it; ``LockBusy`` after ``timeout_s``
    (None: wait as long as it takes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        if timeout_s is None:
            fcntl.flock(f, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockBusy(f"{path} is held by another process for {timeout_s:.0f}s") from None
                    time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def held_elsewhere(path: Path) -> bool:
    """True while another process holds the lock on ``path`` (False when nobody does, or
    the file does not exist)."""
    try:
        f = try_lock(path, "a+b")
    except FileNotFoundError:
        return False
    if f is None:
        return True
    f.close()
    return False
