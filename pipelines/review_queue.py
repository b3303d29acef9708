"""The review queue's durable store (SQLite under the state dir): its one owner.

The stream job writes low-confidence unlabelled predictions to the review topic;
``pipelines.review_sync`` copies them here (``add_synced``: with the topic offsets, in the same
transaction), so the queue survives
a broker restart (the embedded broker keeps topics in memory) and a restart of every
process. Reviewers' votes live here too. An item is decided when ``review.required_reviews``
reviewers answered: the same answer → ``agreed``, else ``escalated`` (a lead settles it).
An agreed answer is sent into ``feedback.raw`` once every vote behind it is past its undo
window (``due`` → the sender → ``mark_sent``); a crash between send and mark resends it,
and the stream drops the repeat as a duplicate (its event id is fixed by the item).

Tables: ``items`` (one per reviewed event: its routed record, uncertainty, status, the
agreed answer and who gave it, when Kafka confirmed it), ``votes`` (one per item and
reviewer; a NULL answer is a skip), ``offsets`` (per partition of the review topic: the
last item read and its event id, to notice a topic that was recreated empty).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flywheel.errors import FlywheelError
from flywheel.layout import StateLayout
from flywheel.model_info import model_names
from flywheel.names import check_reviewer_id
from flywheel.privacy import Forgotten
from flywheel.stores import sqlite_schema
from flywheel.tasks import spec_class, tasks
from pipelines.records import RoutedRecord

if TYPE_CHECKING:
    from flywheel.settings import Settings

PENDING, AGREED, ESCALATED = "pending", "agreed", "escalated"

SCHEMA_VERSION = 1  # PRAGMA user_version (flywheel.stores.sqlite_schema)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items(
    event_id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    task TEXT NOT NULL DEFAULT '',
    uncertainty REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    record TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    answer TEXT,
    reviewers TEXT,
    settled_by TEXT,
    decided_at REAL,
    sent_at REAL,
    send_error TEXT
);
CREATE INDEX IF NOT EXISTS items_queue ON items(model_name, status, uncertainty DESC, enqueued_at);
CREATE TABLE IF NOT EXISTS votes(
    event_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    answer TEXT,
    at REAL NOT NULL,
    final_at REAL NOT NULL,
    PRIMARY KEY(event_id, reviewer)
);
CREATE INDEX IF NOT EXISTS votes_by_reviewer ON votes(reviewer, at);
CREATE TABLE IF NOT EXISTS sessions(
    reviewer TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets(
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    PRIMARY KEY(topic, partition)
);
"""


_PUT_VOTE = "INSERT OR REPLACE INTO votes(event_id, reviewer, answer, at, final_at) VALUES (?, ?, ?, ?, ?)"


class ReviewError(FlywheelError):
    """A review action that cannot be taken; ``status`` is the HTTP answer it maps to."""

    status = 409
    code = "conflict"


class NotInQueue(ReviewError):
    status, code = 404, "not_in_queue"


class UnknownModel(ReviewError):
    status, code = 404, "unknown_model"


class NotAllowed(ReviewError):
    status, code = 403, "not_allowed"


@dataclass(frozen=True)
class Item:
    """A review item as the queue holds it."""

    event_id: str
    model_name: str
    uncertainty: float
    record: RoutedRecord
    status: str = PENDING
    votes: int = 0


@dataclass(frozen=True)
class VoteResult:
    """Where an item stands after a vote: ``status`` and, when agreed, the answer."""

    event_id: str
    status: str
    answer: str | None
    votes: int
    required: int


@dataclass(frozen=True)
class AgreedAnswer:
    """An agreed answer waiting to be sent: the item's record, the answer, who agreed."""

    record: RoutedRecord
    answer: str
    reviewers: list[str]


@dataclass(frozen=True)
class ReviewerStats:
    reviewer: str
    labels: int  # answers given (skips not counted)
    decided: int  # of those, items decided by two or more reviewers
    agreed: int  # of those, where the reviewer gave the agreed answer

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.decided if self.decided else None


@dataclass(frozen=True)
class QueueStats:
    model_name: str
    pending: int  # waiting for a decision
    waiting_for_you: int  # pending items this reviewer has not answered or skipped
    agreed: int
    escalated: int
    sent: int  # agreed answers Kafka confirmed
    unsendable: int  # agreed answers the loop refused (see ``send_error``)
    required_reviews: int
    reviewers: list[ReviewerStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "reviewers"},
            "reviewers": [{**r.__dict__, "agreement": r.agreement} for r in self.reviewers],
        }


class ReviewQueue:
    """The review queue of one state dir. Safe to use from several processes (SQLite WAL,
    one transaction per action); ``sync`` runs in one process at a time (a file lock)."""

    def __init__(self, settings: Settings, uncertainty=None):
        self.settings = settings
        self.required = settings.review.required_reviews
        self.path = StateLayout.of(settings).review_queue
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._uncertainty = uncertainty or _spec_uncertainty
        self._local = threading.local()  # one connection per thread (the HTTP app has several)
        self._connections: list[sqlite3.Connection] = []
        sqlite_schema(self.db, _SCHEMA, SCHEMA_VERSION, self.path)  # once, whoever comes first
        self._import_legacy_ledger()

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # an answer the page was told about is on disk
            self._local.db = db
            self._connections.append(db)
        return db

    def close(self) -> None:
        for db in self._connections:
            db.close()
        self._connections.clear()
        self._local = threading.local()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT (disk full) must not leave the connection stuck
                db.execute("ROLLBACK")
            raise

    # ---- review sessions ----------------------------------------------------------

    def session_generation(self, reviewer: str) -> int:
        """The generation of ``reviewer``'s page sessions (``pipelines.review.session_cookie``)."""
        row = self.db.execute("SELECT generation FROM sessions WHERE reviewer = ?", (reviewer,)).fetchone()
        return row[0] if row else 0

    def end_sessions(self, reviewer: str) -> int:
        """Sign ``reviewer`` out everywhere: every session cookie issued before stops working."""
        with self._write() as db:
            db.execute(
                "INSERT INTO sessions(reviewer, generation) VALUES (?, 1) "
                "ON CONFLICT(reviewer) DO UPDATE SET generation = generation + 1",
                (reviewer,),
            )
            return db.execute("SELECT generation FROM sessions WHERE reviewer = ?", (reviewer,)).fetchone()[0]

    # ---- filling it ----------------------------------------------------------------

    def known_models(self, records: list[RoutedRecord]) -> tuple[list[RoutedRecord], list[RoutedRecord]]:
        """The records of models that exist in this state dir, and the others. Only the first
        are queued: an item for a model nobody trained cannot be answered usefully, and 3,000
        junk model names would fill the page's model picker and ``/metrics`` (the ingestor
        dead-letters the others with reason ``unknown_model``)."""

        names = set(model_names(self.settings.state_dir))
        known = [r for r in records if r.model_name in names]
        return known, [r for r in records if r.model_name not in names]

    def add(self, records: list[RoutedRecord], now: float | None = None) -> int:
        """Put review-topic records of known models in the queue (one item per event id);
        return how many were new."""
        known, _ = self.known_models(records)
        with self._write() as db:
            return self._insert(db, known, time.time() if now is None else now)

    def _insert(self, db, records: list[RoutedRecord], now: float) -> int:
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO items(event_id, model_name, task, uncertainty, enqueued_at, record) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(r.event_id, r.model_name, r.task, self._uncertainty(r), now, r.to_json()) for r in records],
        )
        return db.total_changes - before

    def sync_marks(self, topic: str) -> dict[int, tuple[int, str]]:
        """Where the last sync of ``topic`` left off: partition → (offset, event id)."""
        rows = self.db.execute(
            "SELECT partition, last_offset, last_event_id FROM offsets WHERE topic = ?", (topic,)
        )
        return {p: (o, e) for p, o, e in rows}

    def add_synced(
        self, topic: str, records: list[RoutedRecord], marks: dict[int, tuple[int, str]], reset: list[int]
    ) -> int:
        """Queue ``records`` read from ``topic`` and move its marks, in one transaction (so a
        crash never queues a record twice nor skips one); return how many were new."""
        known, _ = self.known_models(records)  # the others are dead-lettered by the ingestor
        gone = Forgotten.of(self.settings).which((r.event_id, r.subject) for r in known)
        known = [r for r in known if r.event_id not in gone]  # erased on request: never queued again
        with self._write() as db:
            added = self._insert(db, known, time.time())
            for partition in reset:
                db.execute("DELETE FROM offsets WHERE topic = ? AND partition = ?", (topic, partition))
            db.executemany(
                "INSERT OR REPLACE INTO offsets(topic, partition, last_offset, last_event_id) "
                "VALUES (?, ?, ?, ?)",
                [(topic, p, o, e) for p, (o, e) in marks.items()],
            )
        return added

    def _import_legacy_ledger(self) -> None:
        """Items labelled before the queue had this store count as agreed and sent (once)."""
        path = StateLayout.of(self.settings).legacy_review_ledger
        if not path.is_file():
            return
        rows = []
        for line in path.read_text().split("\n"):
            if line.strip():
                entry = json.loads(line)
                rows.append((entry["event_id"], entry["label"], entry.get("reviewer", "reviewer")))
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO items(event_id, model_name, uncertainty, enqueued_at, status, "
                "answer, reviewers, decided_at, sent_at) VALUES (?, '', 0, 0, 'agreed', ?, ?, 0, 0)",
                rows,
            )
        path.rename(path.with_suffix(".jsonl.imported"))

    # ---- reading it ----------------------------------------------------------------

    def _item(self, row) -> Item:
        event_id, model, uncertainty, record, status, votes = row
        return Item(event_id, model, uncertainty, RoutedRecord.from_json(record), status, votes)

    _ITEM = (
        "SELECT i.event_id, i.model_name, i.uncertainty, i.record, i.status, "
        "(SELECT COUNT(*) FROM votes v WHERE v.event_id = i.event_id AND v.answer IS NOT NULL) "
        "FROM items i "
    )

    def next_for(self, model: str, reviewer: str) -> Item | None:
        """The most uncertain pending item of ``model`` this reviewer has not answered or skipped
        (of a task this install knows: another's item could not be shown or answered)."""

        known = tasks()
        row = self.db.execute(
            self._ITEM + "WHERE i.model_name = ? AND i.status = 'pending' AND i.record IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM votes v WHERE v.event_id = i.event_id AND v.reviewer = ?) "
            f"AND i.task IN ({','.join('?' * len(known))}) "
            "ORDER BY i.uncertainty DESC, i.enqueued_at, i.event_id LIMIT 1",
            (model, reviewer, *known),
        ).fetchone()
        return None if row is None else self._item(row)

    def pending(self, model: str | None = None, limit: int | None = None) -> list[Item]:
        """Pending items, the most uncertain first."""
        where = "WHERE i.status = 'pending' AND i.record IS NOT NULL"
        args: list[Any] = []
        if model is not None:
            where += " AND i.model_name = ?"
            args.append(model)
        sql = self._ITEM + where + " ORDER BY i.uncertainty DESC, i.enqueued_at, i.event_id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._item(r) for r in self.db.execute(sql, args)]

    def get(self, event_id: str) -> Item:
        row = self.db.execute(self._ITEM + "WHERE i.event_id = ?", (event_id,)).fetchone()
        if row is None or row[3] is None:
            raise NotInQueue(f"{event_id[:130]!r} is not in the review queue (see `flywheel review list`)")
        return self._item(row)

    def status(self, event_id: str) -> str:
        row = self.db.execute("SELECT status FROM items WHERE event_id = ?", (event_id,)).fetchone()
        if row is None:
            raise NotInQueue(f"{event_id[:130]!r} is not in the review queue (see `flywheel review list`)")
        return row[0]

    # ---- erasure (orchestration.forget) -----------------------------------------------

    def items_of_subject(self, subject: str) -> list[str]:
        """The event ids of the items whose event names ``subject`` (a pseudonym)."""
        rows = self.db.execute(
            "SELECT event_id FROM items WHERE json_extract(record, '$.event.subject_id') = ?", (subject,)
        )
        return [r[0] for r in rows]

    def lookup(self, event_id: str) -> tuple[str, str] | None:
        """(model, status) of ``event_id``'s item, or None when it has none."""
        row = self.db.execute(
            "SELECT model_name, status FROM items WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def forget(self, event_ids: list[str]) -> int:
        """Erasure: the items of ``event_ids`` and their votes; returns the items deleted."""
        deleted = 0
        self.db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten, not left in free pages
        with self._write() as db:
            for start in range(0, len(event_ids), 500):
                chunk = event_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(f"DELETE FROM votes WHERE event_id IN ({marks})", chunk)
                deleted += db.execute(f"DELETE FROM items WHERE event_id IN ({marks})", chunk).rowcount
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and the WAL no longer holds them
        return deleted

    def escalated(self, model: str) -> list[tuple[Item, dict[str, str]]]:
        """Escalated items of ``model`` with each reviewer's answer."""
        out = []
        for row in self.db.execute(
            self._ITEM + "WHERE i.model_name = ? AND i.status = 'escalated' ORDER BY i.decided_at", (model,)
        ):
            answers = dict(
                self.db.execute(
                    "SELECT reviewer, answer FROM votes WHERE event_id = ? AND answer IS NOT NULL "
                    "ORDER BY at",
                    (row[0],),
                ).fetchall()
            )
            out.append((self._item(row), answers))
        return out

    def models(self) -> dict[str, int]:
        """Every model with items in the queue → its pending count."""
        return dict(
            self.db.execute(
                "SELECT model_name, SUM(status = 'pending') FROM items WHERE model_name <> '' "
                "GROUP BY model_name ORDER BY model_name"
            ).fetchall()
        )

    def oldest_pending(self, model: str) -> float | None:
        """When the longest-waiting pending item of ``model`` entered the queue (epoch seconds)."""
        (oldest,) = self.db.execute(
            "SELECT MIN(enqueued_at) FROM items WHERE model_name = ? AND status = 'pending'", (model,)
        ).fetchone()
        return oldest

    def stats(self, model: str, reviewer: str | None = None) -> QueueStats:
        counts = dict(
            self.db.execute(
                "SELECT status, COUNT(*) FROM items WHERE model_name = ? GROUP BY status", (model,)
            ).fetchall()
        )
        sent, unsendable = self.db.execute(
            "SELECT SUM(sent_at IS NOT NULL), SUM(send_error IS NOT NULL) FROM items WHERE model_name = ?",
            (model,),
        ).fetchone()
        waiting = 0
        if reviewer is not None:
            (waiting,) = self.db.execute(
                "SELECT COUNT(*) FROM items i WHERE i.model_name = ? AND i.status = 'pending' "
                "AND i.record IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM votes v WHERE v.event_id = i.event_id AND v.reviewer = ?)",
                (model, reviewer),
            ).fetchone()
        per_reviewer = [
            ReviewerStats(name, labels or 0, decided or 0, agreed or 0)
            for name, labels, decided, agreed in self.db.execute(
                "SELECT v.reviewer, COUNT(*), "
                "SUM(i.status <> 'pending' AND (SELECT COUNT(*) FROM votes w WHERE w.event_id = i.event_id "
                "AND w.answer IS NOT NULL) > 1), "
                "SUM(i.status = 'agreed' AND v.answer = i.answer AND (SELECT COUNT(*) FROM votes w "
                "WHERE w.event_id = i.event_id AND w.answer IS NOT NULL) > 1) "
                "FROM votes v JOIN items i ON i.event_id = v.event_id "
                "WHERE i.model_name = ? AND v.answer IS NOT NULL GROUP BY v.reviewer ORDER BY v.reviewer",
                (model,),
            )
        ]
        return QueueStats(
            model,
            counts.get(PENDING, 0),
            waiting,
            counts.get(AGREED, 0),
            counts.get(ESCALATED, 0),
            sent or 0,
            unsendable or 0,
            self.required,
            per_reviewer,
        )

    # ---- reviewing -----------------------------------------------------------------

    def vote(
        self,
        model: str,
        event_id: str,
        reviewer: str,
        answer: str | None,
        now: float | None = None,
        undo_window_s: float = 0.0,
    ) -> VoteResult:
        """Record ``reviewer``'s answer to an item (``None``: a skip). The answer can be undone
        for ``undo_window_s``; it is sent once the item is agreed and every vote is final."""
        check_reviewer_id(reviewer)
        now = time.time() if now is None else now
        with self._write() as db:
            status = self._pending_status(db, model, event_id)
            if status != PENDING:
                raise ReviewError(f"{event_id} is already {status}; it takes no more answers")
            previous = db.execute(
                "SELECT answer FROM votes WHERE event_id = ? AND reviewer = ?", (event_id, reviewer)
            ).fetchone()
            if previous is not None and previous[0] is not None:
                raise ReviewError(
                    f"{reviewer} already answered {event_id} ({previous[0]!r}); undo it to change it"
                )
            db.execute(
                _PUT_VOTE,
                (event_id, reviewer, answer, now, now + undo_window_s),
            )
            return self._decide(db, event_id, now)

    def settle(
        self, model: str, event_id: str, lead: str, answer: str, now: float | None = None
    ) -> VoteResult:
        """A lead's answer to an escalated item: it becomes the agreed answer, from the lead
        and the reviewers who gave it. Kept apart from the votes (agreement rates count the
        reviewers' own answers) and final at once."""
        now = time.time() if now is None else now
        with self._write() as db:
            status = self._pending_status(db, model, event_id)
            if status != ESCALATED:
                raise ReviewError(f"{event_id} is {status}, not escalated; only escalated items are settled")
            agreeing = {
                r
                for (r,) in db.execute(
                    "SELECT reviewer FROM votes WHERE event_id = ? AND answer = ?", (event_id, answer)
                )
            }
            db.execute(
                "UPDATE items SET status = 'agreed', answer = ?, reviewers = ?, settled_by = ?, "
                "decided_at = ? WHERE event_id = ?",
                (answer, ",".join(sorted(agreeing | {lead})), lead, now, event_id),
            )
            return VoteResult(event_id, AGREED, answer, len(agreeing) + 1, self.required)

    def undo(self, model: str, reviewer: str, now: float | None = None) -> str | None:
        """Take back ``reviewer``'s last answer or skip on ``model`` while its undo window is
        open and it was not sent; return the item's id (None: nothing to undo)."""
        now = time.time() if now is None else now
        with self._write() as db:
            row = db.execute(
                "SELECT v.event_id FROM votes v JOIN items i ON i.event_id = v.event_id "
                "WHERE v.reviewer = ? AND i.model_name = ? ORDER BY v.at DESC, v.rowid DESC LIMIT 1",
                (reviewer, model),
            ).fetchone()
            if row is None:
                return None
            (event_id,) = row
            final_at, sent_at = db.execute(
                "SELECT v.final_at, i.sent_at FROM votes v JOIN items i ON i.event_id = v.event_id "
                "WHERE v.event_id = ? AND v.reviewer = ?",
                (event_id, reviewer),
            ).fetchone()
            if sent_at is not None or final_at <= now:
                raise ReviewError(
                    f"your last answer (on {event_id}) is final: the undo window has passed or it "
                    "entered the loop; answer the next item"
                )
            db.execute("DELETE FROM votes WHERE event_id = ? AND reviewer = ?", (event_id, reviewer))
            db.execute(
                "UPDATE items SET status = 'pending', answer = NULL, reviewers = NULL, decided_at = NULL "
                "WHERE event_id = ?",
                (event_id,),
            )
            self._decide(db, event_id, now)
            return event_id

    def _pending_status(self, db, model: str, event_id: str) -> str:
        row = db.execute(
            "SELECT status FROM items WHERE event_id = ? AND model_name = ? AND record IS NOT NULL",
            (event_id, model),
        ).fetchone()
        if row is None:
            raise NotInQueue(f"{event_id[:130]!r} is not in model {model!r}'s review queue")
        return row[0]

    def _decide(self, db, event_id: str, now: float) -> VoteResult:
        answers = {
            reviewer: answer
            for reviewer, answer in db.execute(
                "SELECT reviewer, answer FROM votes WHERE event_id = ? AND answer IS NOT NULL", (event_id,)
            )
        }
        if len(answers) < self.required:
            configured = set(self.settings.review.reviewers)
            if configured:  # skips leave too few reviewers to ever agree: a lead decides
                skipped = {
                    r
                    for (r,) in db.execute(
                        "SELECT reviewer FROM votes WHERE event_id = ? AND answer IS NULL", (event_id,)
                    )
                }
                if len(configured - skipped) < self.required:
                    db.execute(
                        "UPDATE items SET status = 'escalated', decided_at = ? WHERE event_id = ?",
                        (now, event_id),
                    )
                    return VoteResult(event_id, ESCALATED, None, len(answers), self.required)
            return VoteResult(event_id, PENDING, None, len(answers), self.required)
        if len(set(answers.values())) == 1:
            (answer,) = set(answers.values())
            db.execute(
                "UPDATE items SET status = 'agreed', answer = ?, reviewers = ?, decided_at = ? "
                "WHERE event_id = ?",
                (answer, ",".join(sorted(answers)), now, event_id),
            )
            return VoteResult(event_id, AGREED, answer, len(answers), self.required)
        db.execute(
            "UPDATE items SET status = 'escalated', decided_at = ? WHERE event_id = ?", (now, event_id)
        )
        return VoteResult(event_id, ESCALATED, None, len(answers), self.required)

    # ---- sending agreed answers ----------------------------------------------------

    def due(self, now: float | None = None, limit: int = 500) -> list[AgreedAnswer]:
        """Agreed answers not sent yet whose votes are all past their undo window."""
        now = time.time() if now is None else now
        rows = self.db.execute(
            "SELECT i.record, i.answer, i.reviewers FROM items i WHERE i.status = 'agreed' "
            "AND i.sent_at IS NULL AND i.send_error IS NULL AND i.record IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM votes v WHERE v.event_id = i.event_id AND v.final_at > ?) "
            "ORDER BY i.decided_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [AgreedAnswer(RoutedRecord.from_json(r), a, who.split(",")) for r, a, who in rows]

    def mark_sent(self, event_ids: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._write() as db:
            db.executemany("UPDATE items SET sent_at = ? WHERE event_id = ?", [(now, e) for e in event_ids])

    def mark_unsendable(self, errors: dict[str, str]) -> None:
        """Agreed answers the loop refused (kept, with the reason, out of ``due``)."""
        with self._write() as db:
            db.executemany(
                "UPDATE items SET send_error = ? WHERE event_id = ?",
                [(error[:500], e) for e, error in errors.items()],
            )


def _spec_uncertainty(record: RoutedRecord) -> float:
    try:
        return float(spec_class(record.task).review_uncertainty(record))
    except FlywheelError:
        return 0.0  # a task this install does not know: last in line, still reviewable
