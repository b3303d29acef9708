"""Who the data is about, and what was forgotten.

**Pseudonyms.** A feedback event may name its data subject (``subject_id``: the end user the
event concerns). The stream job replaces it with :func:`pseudonym` (HMAC-SHA256 under a
per-install key, ``ps1:`` and 32 hex digits) before anything downstream stores it, so the
clean and review topics, Feast, the review queue and the version folders hold only the
pseudonym. The key is ``privacy.subject_key`` when set (the same on every machine of one
install), else 32 random bytes made once in ``<state_dir>/privacy/subject.key`` (0600). A
value that already has the pseudonym's shape is kept as it is (a review answer carries its
item's pseudonym); anyone can send one, and it then names nobody the key can reach.

**Forgotten.** :class:`Forgotten` is the list of erased event ids and subjects
(``<state_dir>/privacy/forgotten.sqlite``; ``orchestration.forget`` is its only writer). It
holds keyed hashes of event ids, never the ids, and pseudonyms, never subject ids. Every
intake (the SDK, ``flywheel submit``, ``POST /v1/feedback``) refuses a forgotten event with
reason ``forgotten``; the ingestor gives a replayed one the fate ``forgotten`` and stores
nothing of it; the dataset builder leaves forgotten samples out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.errors import FlywheelError
from flywheel.layout import StateLayout
from flywheel.stores import sqlite_schema

if TYPE_CHECKING:
    from flywheel.settings import Settings

PSEUDONYM = re.compile(r"ps1:[0-9a-f]{32}")  # use fullmatch
FORGOTTEN = "forgotten"  # the reason code of a refused event, and the ingestor's fate
ERASURE_LOCK = "erasure"  # stores.store_lock name: the ingestor's batch write vs. a forget's tombstones

SCHEMA_VERSION = 1  # PRAGMA user_version (flywheel.stores.sqlite_schema)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (digest TEXT PRIMARY KEY, receipt TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (pseudonym TEXT PRIMARY KEY, receipt TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class PrivacyError(FlywheelError):
    """The pseudonym key cannot be read or made."""


def subject_key(settings: Settings) -> bytes:
    """The install's pseudonym key: ``privacy.subject_key``, or the key file (made on first use)."""

    configured = settings.privacy.subject_key
    if configured is not None:
        return configured.get_secret_value().encode("utf-8")
    path = StateLayout.of(settings).subject_key
    try:
        return _checked(path, path.read_bytes())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, os.urandom(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # the first process to make it wins; the others read its key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _checked(path, path.read_bytes())


def _checked(path: Path, key: bytes) -> bytes:
    if len(key) != 32:
        raise PrivacyError(
            f"{path} holds {len(key)} bytes, not a 32-byte key; restore it from a backup (pseudonyms "
            "made with another key no longer match) or set privacy.subject_key"
        )
    return key


def pseudonym(key: bytes, subject_id: str) -> str:
    """The stored form of ``subject_id``: ``ps1:`` + 32 hex digits of HMAC-SHA256 (a value
    that already has that shape is returned as it is)."""

    if PSEUDONYM.fullmatch(subject_id):
        return subject_id
    digest = hmac.new(key, subject_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return "ps1:" + digest[:32]


def event_digest(key: bytes, event_id: str) -> str:
    """What :class:`Forgotten` keeps of an event id (a keyed hash, so the list names no event)."""

    return hmac.new(key, b"event:" + event_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[
        :32
    ]


class Forgotten:
    """The forgotten event ids (as keyed digests) and subjects (as pseudonyms).

    Reading is cheap when nothing was ever forgotten (no file: no query). The writer is
    ``orchestration.forget``; readers are the intakes, the ingestor and the dataset builder.
    """

    def __init__(self, path: Path, key: bytes):
        self.path = Path(path)
        self.key = key
        self._db: sqlite3.Connection | None = None

    @classmethod
    def of(cls, settings: Settings) -> Forgotten:
        return cls(StateLayout.of(settings).forgotten, subject_key(settings))

    def _conn(self, create: bool = False) -> sqlite3.Connection | None:
        if self._db is None:
            if not create and not self.path.exists():
                return None
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            sqlite_schema(db, _SCHEMA, SCHEMA_VERSION, self.path)  # once, whoever comes first
            self.path.chmod(0o600)
            self._check_key(db)
            self._db = db
        return self._db

    def _check_key(self, db: sqlite3.Connection) -> None:
        """The list's digests and pseudonyms were made under one key: another key would match
        none of them and let every forgotten event back in. Refuse it, saying why."""
        mark = hmac.new(self.key, b"forgotten-list", hashlib.sha256).hexdigest()[:16]
        db.execute("INSERT OR IGNORE INTO meta VALUES ('key', ?)", (mark,))
        held = db.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()[0]
        if held != mark:
            db.close()
            raise PrivacyError(
                f"{self.path} was written under another pseudonym key than this one "
                "(privacy.subject_key or <state_dir>/privacy/subject.key changed): forgotten events "
                "and subjects would no longer be recognised. Restore the key it was written with"
            )

    def add(self, receipt: str, event_ids: Iterable[str] = (), subjects: Iterable[str] = ()) -> None:
        """Remember ``event_ids`` and ``subjects`` (pseudonyms) as forgotten (idempotent)."""

        db = self._conn(create=True)
        assert db is not None
        now = time.time()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?)",
                [(event_digest(self.key, e), receipt, now) for e in event_ids],
            )
            db.executemany(
                "INSERT OR IGNORE INTO subjects VALUES (?, ?, ?)", [(s, receipt, now) for s in subjects]
            )

    def which(self, pairs: Iterable[tuple[str, str | None]]) -> set[str]:
        """Of ``(event_id, subject pseudonym or None)`` pairs, the event ids that are forgotten
        (by their own id, or by their subject)."""

        db = self._conn()
        pairs = list(pairs)
        if db is None or not pairs:
            return set()
        digests = {event_digest(self.key, e): e for e, _ in pairs}
        found = {digests[d] for d in _present(db, "events", "digest", list(digests))}
        subjects = _present(db, "subjects", "pseudonym", list({s for _, s in pairs if s}))
        found.update(e for e, s in pairs if s in subjects)
        return found

    def subject_forgotten(self, subject: str) -> bool:
        db = self._conn()
        return db is not None and bool(_present(db, "subjects", "pseudonym", [subject]))

    def counts(self) -> dict[str, int]:
        db = self._conn()
        if db is None:
            return {"events": 0, "subjects": 0}
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("events", "subjects")}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _present(db: sqlite3.Connection, table: str, column: str, values: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            r[0] for r in db.execute(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", chunk)
        )
    return found
