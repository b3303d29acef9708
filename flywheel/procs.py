"""Process helpers: children that die with their parent, and one instance per state dir."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path
from typing import IO

from flywheel.errors import FlywheelError
from flywheel.locks import try_lock

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for a child that gets SIGTERM when its parent dies, even by kill -9
    (Linux ``prctl(PR_SET_PDEATHSIG)``; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class AlreadyRunning(FlywheelError):
    exit_code = 6


def hold_instance_lock(path: Path, what: str) -> IO[str]:
    """Take an exclusive lock for the life of this process (released when it dies).

    Raises AlreadyRunning naming the holder's pid if another process holds it. Keep the
    returned file open for as long as the lock must be held.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    f = try_lock(path, "a+")
    if f is None:
        holder = path.read_text().strip() or "unknown"
        raise AlreadyRunning(
            f"another {what} (pid {holder}) is using {path.parent}; stop it first, or use another "
            "state_dir (FLYWHEEL_STATE_DIR)"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
