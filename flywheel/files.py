"""Atomic file writes for state that other processes read while it changes."""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flywheel.errors import FlywheelError


def write_json_atomic(path: Path, data: Any, durable: bool = True, **dumps: Any) -> None:
    """Write ``data`` as JSON so readers see the old file or the new one, never a torn one:
    a temp file unique to this process (two writers never share it), then a rename.
    ``durable`` fsyncs first, so the new content also survives a power cut; reports that
    are rewritten every few seconds (health) skip it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, **dumps))
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class LockBusy(FlywheelError):
    """Another process holds the lock (a retrain, an alias move or a state change is under way)."""

    exit_code = 7


@contextmanager
def file_lock(path: Path, timeout_s: float | None = 600):
    """An exclusive lock across processes on ``path``; LockBusy after ``timeout_s`` (None: wait).

    One lock per open of the file: a process must not take a lock it already holds."""
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
