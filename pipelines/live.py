"""The live ledger: served predictions and the verified outcomes of each model version.

One SQLite file under the state dir (``StateLayout.live_ledger``), written only by the
ingestor (:meth:`LiveLedger.ingest`, one transaction per micro-batch, before the batch's
offsets are committed) and read by the monitor and ``flywheel status``.

- ``predictions``: every record of the prediction log (``pipelines.predictions``), kept
  ``monitor.retention_days`` for the join.
- ``outcomes``: one row per labelled *served* prediction (key: its ``prediction_id``; a
  later label of the same prediction replaces the earlier one, so a flood of feedback on
  one prediction counts once): the version that made it, when it was made (the server's
  clock), when its label was received (the ingestor's clock, not the client's), and the
  task's live value (1/0 for a right/wrong label, PSNR dB for a restored image). A version
  is judged on the predictions *it* made, whenever their labels arrive (label delay).
  Feedback that names a version and a prediction itself, with no served prediction behind
  it, is kept too (``served`` = 0, keyed by ``event_id``) but never judged by the monitor:
  a client could claim anything there.
- ``pending``: feedback whose ``prediction_id`` names a prediction not seen yet (the two
  topics are read independently); its outcome is recorded when the prediction arrives
  (its Feast row keeps what the event said: the offline store keeps a sample's first row).

Re-delivery after a crash between the write and the commit is harmless: every row is keyed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.layout import StateLayout
from flywheel.stores import sqlite_schema
from pipelines.predictions import PredictionRecord
from pipelines.records import RoutedRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
    task TEXT NOT NULL, predicted_at REAL NOT NULL, prediction TEXT NOT NULL, shadow_of TEXT);
CREATE INDEX IF NOT EXISTS predictions_shadow ON predictions (shadow_of);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (predicted_at);
CREATE TABLE IF NOT EXISTS outcomes (
    outcome_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
    predicted_at REAL NOT NULL, labelled_at REAL NOT NULL, value REAL NOT NULL,
    event_id TEXT NOT NULL, served INTEGER NOT NULL, shadow INTEGER NOT NULL, answer TEXT);
CREATE INDEX IF NOT EXISTS outcomes_version ON outcomes (model, version, served, shadow, predicted_at);
CREATE TABLE IF NOT EXISTS pending (
    event_id TEXT PRIMARY KEY, prediction_id TEXT NOT NULL, record TEXT NOT NULL, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS pending_prediction ON pending (prediction_id);
"""
SCHEMA_VERSION = 3


class LedgerError(FlywheelError):
    """The live ledger cannot be opened or has another layout."""


@dataclass(frozen=True)
class LiveOutcome:
    """One labelled prediction of a version."""

    version: int
    predicted_at: float  # Unix seconds
    labelled_at: float
    value: float
    shadow: bool = False


@dataclass(frozen=True)
class VersionLive:
    """A version's live figures (``flywheel status``)."""

    version: int
    n: int
    mean: float
    first: float
    last: float


def version_number(text: str | None) -> int | None:
    """``"4"`` or ``"v4"`` → 4; anything else (a version not of this registry) → None."""
    if not text:
        return None
    digits = text[1:] if text[:1] in ("v", "V") else text
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 10 else None


class LiveLedger:
    """The ledger at ``path`` (see the module docstring). ``readonly`` for the readers."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        self.db: sqlite3.Connection | None = None
        try:
            if readonly:
                if path.exists():
                    self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
                    self._check_version()
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            # once, whoever comes first; layouts before this one are not read (oldest)
            sqlite_schema(self.db, SCHEMA, SCHEMA_VERSION, path, oldest=SCHEMA_VERSION)
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"the live ledger {path} cannot be used ({exc}); move it aside and restart the "
                "ingestor: a new one is started (live figures so far are in the moved file)"
            ) from exc

    @property
    def conn(self) -> sqlite3.Connection:
        """The open database (a read-only ledger whose file does not exist yet has none)."""
        if self.db is None:
            raise LedgerError(f"the live ledger {self.path} does not exist yet: the ingestor creates it")
        return self.db

    def _check_version(self) -> None:
        found = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if found != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"layout version {found}, this Flywheel reads {SCHEMA_VERSION}")

    @classmethod
    def of(cls, settings, readonly: bool = False) -> LiveLedger:
        return cls(StateLayout.of(settings).live_ledger, readonly)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    # ---- the writer: the ingestor ---------------------------------------------------

    def ingest(
        self,
        predictions: Iterable[PredictionRecord],
        records: list[RoutedRecord],
        value_of: Callable[[RoutedRecord], float | None],
        now: datetime | None = None,
    ) -> list[RoutedRecord]:
        """Keep ``predictions``, join ``records`` (clean feedback) to them, record the
        outcomes, in one transaction; returns the records joined (for the Feast rows).
        ``value_of``: the task's live value of a joined record (``TaskSpec.live_value``)."""
        received = (now or datetime.now(UTC)).timestamp()
        joined: list[RoutedRecord] = []
        with self.conn:  # one transaction
            for p in predictions:
                self.conn.execute(
                    "INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?)",
                    (
                        p.prediction_id,
                        p.model_name,
                        p.model_version,
                        p.task,
                        p.predicted_at.timestamp(),
                        json.dumps(p.prediction),
                        p.shadow_of,
                    ),
                )
                self._complete_pending(p.shadow_of or p.prediction_id, value_of)
                if p.shadow_of is not None:
                    self._late_shadow(p, value_of)
            for record in records:
                joined.append(self._join(record, value_of, received))
        return joined

    def _prediction(self, prediction_id: str) -> tuple[int, str, float, dict] | None:
        row = self.conn.execute(
            "SELECT version, model, predicted_at, prediction FROM predictions "
            "WHERE prediction_id=? AND shadow_of IS NULL",
            (prediction_id,),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2], json.loads(row[3]))

    def _join(self, record: RoutedRecord, value_of, received: float) -> RoutedRecord:
        pid = record.prediction_id
        served = self._prediction(pid) if pid else None
        if pid and served is not None and served[1] == record.model_name:
            version, _, predicted_at, prediction = served
            record = record.with_prediction(str(version), prediction)
            self._outcome(pid, record, version, predicted_at, received, value_of, served=True)
            self._shadow_outcomes(record, pid, received, value_of)
            return record
        if pid and served is None and version_number(record.model_version) is None:
            self.conn.execute(
                "INSERT OR REPLACE INTO pending VALUES (?,?,?,?)",
                (record.event_id, pid, record.to_json(), received),
            )
            return record
        named = version_number(record.model_version)
        if named is not None:  # the event names the version and its prediction itself
            when = record.event_time.timestamp()
            self._outcome(f"event:{record.event_id}", record, named, when, received, value_of, served=False)
        return record

    def _outcome(
        self,
        outcome_id: str,
        record: RoutedRecord,
        version: int,
        predicted_at: float,
        received: float,
        value_of,
        served: bool,
        shadow: bool = False,
    ) -> None:
        value = value_of(record)
        if value is None:
            return
        # a served outcome keeps its answer (the feedback, not the input), so that a shadow
        # prediction logged after the feedback was joined can still be judged on it
        answer = record.answer_only().to_json() if served and not shadow else None
        self.conn.execute(
            "INSERT OR REPLACE INTO outcomes VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                outcome_id,
                record.model_name,
                version,
                predicted_at,
                received,
                float(value),
                record.event_id,
                int(served),
                int(shadow),
                answer,
            ),
        )

    def _late_shadow(self, p: PredictionRecord, value_of) -> None:
        """A shadow prediction whose champion's prediction was already labelled: judged now."""
        row = self.conn.execute(
            "SELECT answer, labelled_at FROM outcomes WHERE outcome_id=? AND served=1 AND shadow=0",
            (p.shadow_of,),
        ).fetchone()
        if row is None or row[0] is None:
            return
        answer = RoutedRecord.from_json(row[0]).with_prediction(str(p.model_version), p.prediction)
        when = p.predicted_at.timestamp()
        self._outcome(
            p.prediction_id, answer, p.model_version, when, row[1], value_of, served=True, shadow=True
        )

    def _shadow_outcomes(self, record: RoutedRecord, pid: str, received: float, value_of) -> None:
        """The candidate's shadow predictions beside ``pid``, judged on the same answer."""
        rows = self.conn.execute(
            "SELECT prediction_id, version, predicted_at, prediction FROM predictions WHERE shadow_of=?",
            (pid,),
        ).fetchall()
        for shadow_id, version, predicted_at, prediction in rows:
            answer = record.with_prediction(str(version), json.loads(prediction))
            self._outcome(
                shadow_id, answer, version, predicted_at, received, value_of, served=True, shadow=True
            )

    def _complete_pending(self, prediction_id: str, value_of) -> None:
        if self._prediction(prediction_id) is None:
            return  # a shadow record arrived before its champion's: wait for that one
        rows = self.conn.execute(
            "SELECT event_id, record, received_at FROM pending WHERE prediction_id=?", (prediction_id,)
        ).fetchall()
        for event_id, text, received in rows:
            self._join(RoutedRecord.from_json(text), value_of, received)
            self.conn.execute("DELETE FROM pending WHERE event_id=?", (event_id,))

    def prune(self, older_than: datetime) -> int:
        """Forget predictions (and feedback still waiting for one) older than ``older_than``."""
        cutoff = older_than.timestamp()
        with self.conn:
            gone = self.conn.execute("DELETE FROM predictions WHERE predicted_at < ?", (cutoff,)).rowcount
            gone += self.conn.execute("DELETE FROM pending WHERE received_at < ?", (cutoff,)).rowcount
        return gone

    def forget(self, event_ids: list[str]) -> dict[str, int]:
        """Erasure: the outcomes and waiting feedback of ``event_ids``, and the served
        predictions they were joined to (with their shadows), in one transaction; returns the
        rows deleted per table."""
        counts = {"outcomes": 0, "pending": 0, "predictions": 0}
        self.conn.execute("PRAGMA secure_delete=ON")
        with self.conn:
            for start in range(0, len(event_ids), 400):
                chunk = event_ids[start : start + 400]
                marks = ",".join("?" * len(chunk))
                pids = {
                    r[0]
                    for r in self.conn.execute(
                        f"SELECT outcome_id FROM outcomes WHERE event_id IN ({marks}) AND shadow=0 "
                        "AND outcome_id NOT LIKE 'event:%'",
                        chunk,
                    )
                }
                pids.update(
                    r[0]
                    for r in self.conn.execute(
                        f"SELECT prediction_id FROM pending WHERE event_id IN ({marks})", chunk
                    )
                )
                counts["outcomes"] += self.conn.execute(
                    f"DELETE FROM outcomes WHERE event_id IN ({marks})", chunk
                ).rowcount
                counts["pending"] += self.conn.execute(
                    f"DELETE FROM pending WHERE event_id IN ({marks})", chunk
                ).rowcount
                ordered = sorted(pids)
                for first in range(0, len(ordered), 400):
                    part = ordered[first : first + 400]
                    pm = ",".join("?" * len(part))
                    counts["predictions"] += self.conn.execute(
                        f"DELETE FROM predictions WHERE prediction_id IN ({pm}) OR shadow_of IN ({pm})",
                        part + part,
                    ).rowcount
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return counts

    def pending_of_subject(self, subject: str) -> list[str]:
        """Event ids of feedback waiting for its prediction whose event names ``subject``."""
        if self.db is None:
            return []
        rows = self.conn.execute(
            "SELECT event_id FROM pending WHERE json_extract(record, '$.event.subject_id') = ?", (subject,)
        )
        return [r[0] for r in rows]

    def outcome_count(self, event_ids: list[str]) -> int:
        """How many outcomes the ledger holds for ``event_ids`` (lineage)."""
        if self.db is None or not event_ids:
            return 0
        marks = ",".join("?" * len(event_ids[:400]))
        row = self.conn.execute(f"SELECT COUNT(*) FROM outcomes WHERE event_id IN ({marks})", event_ids[:400])
        return row.fetchone()[0]

    def served_count(self, model: str, version: int) -> int:
        """Predictions ``version`` served (not shadows) still in the ledger (kept
        ``monitor.retention_days``)."""
        if self.db is None:
            return 0
        return self.conn.execute(
            "SELECT COUNT(*) FROM predictions WHERE model=? AND version=? AND shadow_of IS NULL",
            (model, version),
        ).fetchone()[0]

    # ---- the readers: the monitor, status ---------------------------------------------

    def outcomes(
        self,
        model: str,
        version: int,
        *,
        predicted_after: float | None = None,
        predicted_before: float | None = None,
        max_delay: float | None = None,
        limit: int | None = None,
        latest: bool = True,
        shadow: bool = False,
        served: bool = True,
    ) -> list[LiveOutcome]:
        """The version's labelled predictions in the prediction-time range, oldest first:
        the latest ``limit`` of them (or the earliest, ``latest=False``); with ``max_delay``
        only labels received within that many seconds of their prediction."""
        if self.db is None:
            return []
        sql = (
            "SELECT version, predicted_at, labelled_at, value, shadow FROM outcomes "
            "WHERE model=? AND version=? AND shadow=? AND served=?"
        )
        args: list = [model, version, int(shadow), int(served)]
        for clause, value in (
            (" AND predicted_at >= ?", predicted_after),
            (" AND predicted_at < ?", predicted_before),
            (" AND labelled_at - predicted_at <= ?", max_delay),
        ):
            if value is not None:
                sql += clause
                args.append(value)
        sql += (
            " ORDER BY predicted_at DESC, outcome_id DESC" if latest else " ORDER BY predicted_at, outcome_id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self.conn.execute(sql, args).fetchall()
        found = [LiveOutcome(v, p, lab, val, bool(s)) for v, p, lab, val, s in rows]
        return found[::-1] if latest else found

    def per_version(self, model: str) -> list[VersionLive]:
        """Each version's served, labelled predictions (what the monitor judges)."""
        if self.db is None:
            return []
        rows = self.conn.execute(
            "SELECT version, COUNT(*), AVG(value), MIN(predicted_at), MAX(predicted_at) FROM outcomes "
            "WHERE model=? AND shadow=0 AND served=1 GROUP BY version ORDER BY version",
            (model,),
        ).fetchall()
        return [VersionLive(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        if self.db is None:
            return {"predictions": 0, "outcomes": 0, "pending": 0}
        return {
            table: self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("predictions", "outcomes", "pending")
        }
