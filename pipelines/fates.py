"""The fate ledger: each delivered record's fate, on disk, written by the ingestor only.

Every event the stream job reads ends in exactly one of clean, review, dlq or duplicates;
the ingestor (``pipelines.ingest``) writes each where it lives for good (Feast, the review
queue, the dead-letter table below) and then records its fate here, before it commits the
offsets. A prediction-log record's fate is ``prediction`` (the live ledger keeps it).

The settler (``pipelines.settler``) reads this ledger to trim the edge journal: a journal
record whose ``ident`` (event id, prediction id, or a raw record's generated id) has a fate
here is settled. So the ledger, not the broker, is where "nothing acknowledged is lost" is
checked, and it survives the embedded broker forgetting its topics.

A repeat of an ident (a resent event, or a re-delivery after the broker came back empty)
keeps its first fate and counts one more ``repeats``; a duplicates-topic record read before
the copy it repeats (another topic, another batch) gives way to that copy's fate.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flywheel.layout import StateLayout
from flywheel.privacy import FORGOTTEN
from flywheel.stores import sqlite_schema

CLEAN, REVIEW, DLQ, DUPLICATE, PREDICTION = "clean", "review", "dlq", "duplicate", "prediction"
# an event of a forgotten id or subject (flywheel.privacy) that came again: stored nowhere
FATES = (CLEAN, REVIEW, DLQ, DUPLICATE, PREDICTION, FORGOTTEN)

SCHEMA_VERSION = 1  # PRAGMA user_version (flywheel.stores.sqlite_schema)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS fates (
    ident TEXT PRIMARY KEY,
    fate TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    at REAL NOT NULL,
    repeats INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    ident TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Fate:
    ident: str
    fate: str


class FateLedger:
    """SQLite at ``<state_dir>/fates.sqlite`` (WAL). One writer (the ingestor); readers anywhere."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        sqlite_schema(self.db, _SCHEMA, SCHEMA_VERSION, self.path)  # once, whoever comes first

    @classmethod
    def of(cls, settings) -> FateLedger:
        return cls(StateLayout.of(settings).fates)

    def record(
        self, fates: Iterable[Fate], epoch: int = 0, dead_letters: dict[str, str] | None = None
    ) -> None:
        """Record fates (the first one per ident wins; a later one counts a repeat) and the
        dead-letter records' bodies, in one transaction."""
        now = time.time()
        rows = [(f.ident, f.fate, epoch, now) for f in fates]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO fates(ident, fate, epoch, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(ident) DO UPDATE SET repeats = repeats + 1, fate = CASE "
                f"WHEN fate = '{DUPLICATE}' AND excluded.fate != '{DUPLICATE}' THEN excluded.fate "
                "ELSE fate END",
                rows,
            )
            if dead_letters:
                self.db.executemany(
                    "INSERT OR IGNORE INTO dead_letters(ident, record, at) VALUES (?, ?, ?)",
                    [(i, r, now) for i, r in dead_letters.items()],
                )

    def known(self, idents: Iterable[str]) -> set[str]:
        """Which of ``idents`` have a fate."""
        idents = list(dict.fromkeys(idents))
        found: set[str] = set()
        for start in range(0, len(idents), 500):
            chunk = idents[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.db.execute(f"SELECT ident FROM fates WHERE ident IN ({marks})", chunk)
            )
        return found

    def fate_of(self, ident: str) -> str | None:
        row = self.db.execute("SELECT fate FROM fates WHERE ident = ?", (ident,)).fetchone()
        return row[0] if row else None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(FATES, 0)
        counts.update(dict(self.db.execute("SELECT fate, COUNT(*) FROM fates GROUP BY fate")))
        counts["repeats"] = self.db.execute("SELECT COALESCE(SUM(repeats), 0) FROM fates").fetchone()[0]
        return counts

    def forget(self, idents: list[str]) -> tuple[int, int]:
        """Erasure: drop the dead letters of ``idents`` (they may hold a masked copy of the
        event) and give each the fate ``forgotten``; return (fates written, dead letters dropped)."""
        marked = dropped = 0
        now = time.time()
        self.db.execute("PRAGMA secure_delete=ON")
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(idents), 500):
                chunk = idents[start : start + 500]
                marks = ",".join("?" * len(chunk))
                dropped += self.db.execute(
                    f"DELETE FROM dead_letters WHERE ident IN ({marks})", chunk
                ).rowcount
                # every erased id gets the fate, known or not: a copy still in the edge journal is
                # then settled (trimmed) by the settler, never re-delivered
                marked += self.db.executemany(
                    "INSERT INTO fates(ident, fate, epoch, at) VALUES (?, ?, 0, ?) "
                    f"ON CONFLICT(ident) DO UPDATE SET fate = '{FORGOTTEN}'",
                    [(i, FORGOTTEN, now) for i in chunk],
                ).rowcount
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return marked, dropped

    def prune(self, before: float) -> int:
        """Forget fates recorded before ``before`` (unix time); dead letters are kept."""
        with self.db:
            return self.db.execute("DELETE FROM fates WHERE at < ?", (before,)).rowcount

    def close(self) -> None:
        self.db.close()
