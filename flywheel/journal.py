"""The edge journal: what a client acknowledges is on disk first (fsync'd), until its fate is.

The embedded broker (tansu's ``memory://`` engine) forgets every topic when it stops, so
Kafka's confirmation alone is not durability there. Every producer that acknowledges
something to a user (``FeedbackClient`` for ``POST /v1/feedback``, ``flywheel submit`` and
agreed review answers; ``PredictionLog`` for ``POST /v1/predict``) appends the records to
this journal and fsyncs before producing them, and only answers after both. The settler
(``pipelines.settler``) trims each writer's settled prefix once every record in it has a
recorded fate, and re-delivers what is unsettled after the broker came back empty.

Layout, one folder per writer process (so appends need no cross-process lock)::

    <state_dir>/journal/<writer>/lock            flock'd by the writer while it lives
    <state_dir>/journal/<writer>/00000000.seg    frames, appended and fsync'd
    <state_dir>/journal/<writer>/settled         the settler's cursor: "segment offset"

A frame is ``b"FWJ1" | u32 length | u32 crc32(payload) | payload`` and its payload
``u8 kind | f64 unix time | u16 topic | i32 key (-1 = none) | u16 ident | value``. ``kind`` 1 is a record,
2 voids an earlier one (its delivery failed, so it was never acknowledged: nobody waits
for its fate). A torn tail (a writer killed mid-append, or a short disk write) is found by
the length and the CRC: the good prefix is kept and the tear is reported, never guessed at.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from flywheel.errors import BrokerError
from flywheel.locks import held_elsewhere, try_lock

MAGIC = b"FWJ1"
_HEAD = struct.Struct(">4sII")
RECORD, VOID = 1, 2
SEGMENT_BYTES = 8 * 1024 * 1024
MAX_FRAME = 64 * 1024 * 1024


class SpoolFull(BrokerError):
    """The journal holds ``max_bytes`` of unsettled records: refuse, never drop."""

    code = "spool_full"


class JournalWriteError(BrokerError):
    """The journal could not be written (disk full, read-only, ...): nothing was acknowledged."""

    code = "journal_unwritable"


@dataclass(frozen=True)
class Entry:
    """One record to deliver: its topic, Kafka key and value, and ``ident``, the name its
    fate is recorded under (an event id, a prediction id, or a generated id for raw bytes)."""

    topic: str
    key: bytes | None
    value: bytes
    ident: str


@dataclass(frozen=True)
class Position:
    segment: int
    offset: int

    def __lt__(self, other: Position) -> bool:
        return (self.segment, self.offset) < (other.segment, other.offset)


@dataclass(frozen=True)
class Framed:
    """A frame read back: where it starts, where the next starts, and what it holds."""

    at: Position
    end: Position
    kind: int
    entry: Entry
    written_at: float  # unix time of the append


@dataclass(frozen=True)
class Tear:
    path: Path
    offset: int
    size: int
    reason: str

    def describe(self) -> str:
        left = self.size - self.offset
        return f"{self.path}: torn record at byte {self.offset} ({self.reason}); {left} bytes ignored"


def new_ident() -> str:
    """An id for a record that names none (raw bytes without an event_id): letters only, so
    PII masking of the dead-letter copy of its key leaves it as it is."""
    return "~raw-" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(24))


def encode(kind: int, entry: Entry, when: float | None = None) -> bytes:
    topic, ident = entry.topic.encode(), entry.ident.encode()
    key = entry.key
    payload = b"".join(
        (
            struct.pack(">BdH", kind, time.time() if when is None else when, len(topic)),
            topic,
            struct.pack(">i", -1 if key is None else len(key)),
            key or b"",
            struct.pack(">H", len(ident)),
            ident,
            entry.value,
        )
    )
    return _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> tuple[int, float, Entry]:
    kind, when, topic_len = struct.unpack_from(">BdH", payload, 0)
    at = 11
    topic = payload[at : at + topic_len].decode()
    at += topic_len
    (key_len,) = struct.unpack_from(">i", payload, at)
    at += 4
    key = None if key_len < 0 else payload[at : at + key_len]
    at += max(key_len, 0)
    (ident_len,) = struct.unpack_from(">H", payload, at)
    at += 2
    ident = payload[at : at + ident_len].decode()
    at += ident_len
    return kind, when, Entry(topic, key, payload[at:], ident)


def read_segment(path: Path, start: int = 0) -> tuple[list[Framed], Tear | None]:
    """The frames of one segment from byte ``start``, and the tear that ended it early, if any."""
    number = int(path.stem)
    data = path.read_bytes()
    out: list[Framed] = []
    at = start
    while at < len(data):
        if len(data) - at < _HEAD.size:
            return out, Tear(path, at, len(data), "short header")
        magic, length, crc = _HEAD.unpack_from(data, at)
        if magic != MAGIC or length > MAX_FRAME:
            return out, Tear(path, at, len(data), "bad magic or length")
        body = data[at + _HEAD.size : at + _HEAD.size + length]
        if len(body) < length:
            return out, Tear(path, at, len(data), f"short body ({len(body)} of {length} bytes)")
        if zlib.crc32(body) != crc:
            return out, Tear(path, at, len(data), "checksum mismatch")
        try:
            kind, when, entry = _decode(body)
        except (struct.error, UnicodeDecodeError) as exc:
            return out, Tear(path, at, len(data), f"undecodable payload ({exc})")
        end = at + _HEAD.size + length
        out.append(Framed(Position(number, at), Position(number, end), kind, entry, when))
        at = end
    return out, None


def _segment_name(number: int) -> str:
    return f"{number:08d}.seg"


def segments(folder: Path) -> list[int]:
    numbers = []
    for path in folder.glob("*.seg"):
        try:
            numbers.append(int(path.stem))
        except ValueError:
            continue
    return sorted(numbers)


def journal_bytes(root: Path) -> int:
    """The bytes of every segment under ``root`` (settled segments are deleted, so this is
    about what is unsettled)."""
    total = 0
    try:
        writers = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for writer in writers:
        if not writer.is_dir():
            continue
        try:
            total += sum(e.stat().st_size for e in os.scandir(writer.path) if e.name.endswith(".seg"))
        except FileNotFoundError:
            continue  # the settler removed it meanwhile
    return total


class JournalWriter:
    """Appends this process's records to its own folder; thread-safe; one per process and root."""

    def __init__(self, root: Path, max_bytes: int, fsync: bool = True, segment_bytes: int = SEGMENT_BYTES):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.name = f"{int(time.time() * 1000):013d}-{os.getpid()}-{secrets.token_hex(3)}"
        self.folder = self.root / self.name
        self._lock = threading.Lock()
        self._segment = -1
        self._file: BinaryIO | None = None
        self._lock_file: IO | None = None
        self._total_checked_at = 0.0
        self._total = 0

    def _open(self) -> BinaryIO:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._lock_file is None:
            self._lock_file = try_lock(self.folder / "lock", "a+b")  # held for the process's life
            if self._lock_file is None:
                raise JournalWriteError(f"{self.folder} is another writer's; each writer has its own folder")
        if self._file is not None:
            self._file.close()
        self._segment += 1
        file = self._file = open(self.folder / _segment_name(self._segment), "ab")  # noqa: SIM115
        if self.fsync:
            _fsync_dir(self.folder)
        return file

    def _writable(self, incoming: int) -> BinaryIO:
        """The current segment, or a new one when ``incoming`` bytes would overflow it."""
        file = self._file
        if file is None or (file.tell() + incoming > self.segment_bytes and file.tell()):
            file = self._open()
        return file

    def _check_room(self, incoming: int) -> None:
        now = time.monotonic()
        if now - self._total_checked_at > 1.0:
            self._total = journal_bytes(self.root)
            self._total_checked_at = now
        if self._total + incoming > self.max_bytes:
            raise SpoolFull(
                f"the journal under {self.root} holds {self._total} bytes of unsettled records "
                f"(limit journal.max_bytes = {self.max_bytes}); the stream job or the ingestor is "
                "not keeping up or is down: check `flywheel status`, then retry"
            )

    def append(self, entries: list[Entry], kind: int = RECORD) -> Position:
        """Append and (by default) fsync ``entries``; return where the first one starts."""
        blob = b"".join(encode(kind, e) for e in entries)
        with self._lock:
            if kind == RECORD:
                self._check_room(len(blob))
            try:
                file = self._writable(len(blob))
                at = Position(self._segment, file.tell())
                file.write(blob)
                file.flush()
                if self.fsync and kind == RECORD:
                    os.fsync(file.fileno())
            except OSError as exc:
                self._recover_after_failed_write()
                hint = "free disk space" if exc.errno == errno.ENOSPC else "check the state dir"
                what = exc.strerror or exc
                raise JournalWriteError(
                    f"could not write the journal in {self.folder} ({what}); {hint}, then retry"
                ) from exc
            self._total += len(blob)
            return at

    def _recover_after_failed_write(self) -> None:
        """A failed write may leave part of a frame: start a new segment, so the tear stays
        at the end of the old one (where readers expect and report it)."""
        try:
            self._open()
        except OSError:
            self._file = None  # the next append tries again

    def void(self, entries: list[Entry]) -> None:
        """Mark ``entries`` as never acknowledged (their delivery failed). Not fsync'd: if it
        is lost, the settler only waits longer, or re-delivers (dedupe drops the repeat)."""
        try:
            self.append(entries, VOID)
        except JournalWriteError as exc:  # best effort by design: see the docstring
            logging.getLogger("flywheel.journal").warning(
                "could not void %d record(s): %s", len(entries), exc
            )

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def writer_alive(folder: Path) -> bool:
    """True while the writer of ``folder`` holds its lock."""
    return held_elsewhere(folder / "lock")


def read_cursor(folder: Path) -> Position:
    try:
        segment, offset = (folder / "settled").read_text().split()
        return Position(int(segment), int(offset))
    except (FileNotFoundError, ValueError):
        return Position(0, 0)


def write_cursor(folder: Path, position: Position) -> None:
    tmp = folder / "settled.tmp"
    tmp.write_text(f"{position.segment} {position.offset}\n")
    os.replace(tmp, folder / "settled")


def unsettled(folder: Path, tears: list[Tear] | None = None) -> Iterator[Framed]:
    """Every frame of one writer after its settled cursor, in order (tears reported into
    ``tears``; a tear ends its segment, and reading goes on with the next one)."""
    cursor = read_cursor(folder)
    for number in segments(folder):
        if number < cursor.segment:
            continue
        path = folder / _segment_name(number)
        try:
            frames, tear = read_segment(path, cursor.offset if number == cursor.segment else 0)
        except FileNotFoundError:
            continue
        if tear is not None and tears is not None:
            tears.append(tear)
        yield from frames


def trim(folder: Path, upto: Position) -> None:
    """Settle ``folder`` up to ``upto``: the cursor moves there and whole segments before it go."""
    write_cursor(folder, upto)
    for number in segments(folder):
        if number < upto.segment:
            (folder / _segment_name(number)).unlink(missing_ok=True)
