"""A temp folder for the stream job's JVM, gone at the latest when the next job starts.

Flink writes about 60 MB into ``java.io.tmpdir`` at every start (the table planner jar it
unpacks, the mini-cluster's blobs, the Python dist cache, RPC and shuffle folders) and
removes it only on a clean JVM exit. A job stopped by a signal or kill -9 leaves it in
``/tmp`` for good: 146 starts of the test suite and benchmarks had filled 6 GB there and
the disk with it. So each job gets ``<state_dir>/flink-tmp/<pid>-<random>/`` next to a
lock file it holds (flock) while it lives; ``claim`` first removes every folder whose lock
nobody holds, i.e. whose job is dead, however it died.

The JVM itself normally dies with its job (PyFlink's gateway pings the Python side every
0.1 s and exits when that fails), but a JVM stuck in its shutdown hooks outlives a job
killed with SIGKILL: one was found still running (780 MB, parent 1) after a chaos soak.
Its folder names it (``-Djava.io.tmpdir=<folder>`` on its command line), so the sweep
kills any process still running with a dead job's folder before removing the folder.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import IO

from flywheel.locks import try_lock

log = logging.getLogger(__name__)
_HELD: list[IO[str]] = []  # locks held for the life of this process


def _same_file(f: IO[str], path: Path) -> bool:
    try:
        return os.fstat(f.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def sweep(root: Path) -> list[Path]:
    """Remove the folders under ``root`` whose job is dead (nobody holds their lock) and
    folders left without a lock; return them."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for lock_path in sorted(root.glob("*.lock")):
        f = try_lock(lock_path)
        if f is None:
            continue  # its job is alive
        with f:
            folder = lock_path.with_suffix("")
            _kill_orphans(folder)
            if folder.exists():
                shutil.rmtree(folder, onerror=_report)
                removed.append(folder)
            lock_path.unlink(missing_ok=True)
    for folder in root.iterdir():
        # a folder is made only after its lock is held, so one without a lock file is what
        # a sweep killed between the two removals left behind
        if folder.is_dir() and not folder.with_suffix(".lock").exists():
            shutil.rmtree(folder, onerror=_report)
            removed.append(folder)
    return removed


def _kill_orphans(folder: Path) -> list[int]:
    """SIGKILL every process whose command line sets ``java.io.tmpdir`` to ``folder`` (a
    JVM whose job is dead); return their pids. Linux ``/proc`` only; elsewhere nothing."""
    marker = f"-Djava.io.tmpdir={folder}".encode()
    killed: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return killed
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in args:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                continue
            except PermissionError as e:
                log.warning("a dead job's JVM %s still runs and cannot be killed: %s", entry.name, e)
                continue
            killed.append(int(entry.name))
    if killed:
        log.warning("killed %d JVM(s) left running by a dead stream job: pid %s", len(killed), killed)
    return killed


def _report(function, path, exc_info) -> None:
    log.warning("could not remove %s (%s): %s; remove it by hand", path, function.__name__, exc_info[1])


def claim(root: Path) -> Path:
    """A fresh folder under ``root`` for this process, locked until it exits (and removed
    then when it exits normally); dead jobs' folders are swept first."""
    root.mkdir(parents=True, exist_ok=True)
    removed = sweep(root)
    if removed:
        log.info("removed %d temp folder(s) left by stopped jobs under %s", len(removed), root)
    while True:
        lock_path = root / f"{os.getpid()}-{secrets.token_hex(4)}.lock"
        f = try_lock(lock_path)
        # a sweep in another process may have taken and removed the file between open and lock
        if f is not None and _same_file(f, lock_path):
            break
        if f is not None:
            f.close()
    _HELD.append(f)
    folder = lock_path.with_suffix("")
    folder.mkdir()
    atexit.register(_release, folder, lock_path)
    return folder


def _release(folder: Path, lock_path: Path) -> None:
    shutil.rmtree(folder, onerror=_report)
    lock_path.unlink(missing_ok=True)


def java_tmpdir_args(folder: Path) -> str:
    """``JVM_ARGS`` (read by PyFlink when it starts the JVM) with ``java.io.tmpdir`` set."""
    args = [a for a in os.environ.get("JVM_ARGS", "").split() if not a.startswith("-Djava.io.tmpdir=")]
    return " ".join([*args, f"-Djava.io.tmpdir={folder}"])
