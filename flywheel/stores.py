"""Creating or migrating a store under the state dir: once, by whichever process comes first.

Two processes starting on a fresh state dir (two API replicas on one volume, ``serve`` beside
a cron ``retrain``) used to run MLflow's schema migrations on the same SQLite file at once,
and one died (``duplicate column name: step``). Every store that is created or migrated on
first use goes through :func:`prepare`: a file lock per store under ``<state_dir>/locks``,
and a marker naming the version that prepared it, so later processes skip the lock entirely.
Flywheel's own SQLite stores (the review queue, the fate ledger, the live ledger, the list of
the forgotten) go through :func:`sqlite_schema`: their tables are made inside one SQLite
write transaction (SQLite's own lock: a second process waits for it, then finds them) and
stamped with ``PRAGMA user_version``, so a store written by a newer Flywheel stops with the
fix instead of being used half-understood.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from flywheel.errors import ConfigError
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


def sqlite_schema(
    db: sqlite3.Connection, schema: str, version: int, store: str | Path, oldest: int = 1
) -> None:
    """Make the tables of ``schema`` (``CREATE ... IF NOT EXISTS`` statements) on ``db``, a
    connection to the store at ``store``, once: in one ``BEGIN IMMEDIATE`` transaction, stamped
    ``PRAGMA user_version = version``. A fresh or unstamped file (0) and a store of a version
    from ``oldest`` on get the tables it lacks and the stamp (additive upgrades); a store of a
    newer version, or older than ``oldest`` (a layout that changed), is refused with the fix.
    ``db`` must not be inside a transaction."""
    if db.execute("PRAGMA user_version").fetchone()[0] == version:
        return  # the common case: made before; no write lock for a reader opening the store
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found > version:
            raise ConfigError(
                f"the store {store} has layout version {found}, written by a newer Flywheel than this "
                f"one (it reads {version}): run the Flywheel that wrote it, or move the file aside to "
                "start an empty store"
            )
        if found and found < oldest:
            raise ConfigError(
                f"the store {store} has layout version {found}, from an older Flywheel whose layout "
                f"this one (version {version}) cannot read: move the file aside to start an empty store"
            )
        if found != version:
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={int(version)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
