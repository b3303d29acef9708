"""The settler: trims the edge journal behind the fate ledger and re-delivers what was lost.

One pass (``settle``), run every ``journal.settle_interval_s`` by ``flywheel run`` (and by
``flywheel journal settle``):

1. For each writer's folder under ``<state_dir>/journal``, read the records after its
   settled cursor (``flywheel.journal``). A record is *settled* when its ident has a fate
   in the fate ledger (``pipelines.fates``), or it was voided (its delivery failed, so it
   was never acknowledged). The cursor moves past the longest settled prefix; whole
   segments behind it are deleted; a dead writer's folder goes once all of it is settled.
2. *Re-delivery.* A record with no fate is produced again (a plain producer, no journal:
   it is in the journal already) when
   - the embedded broker started a new epoch after the record was written (the broker
     forgot it, and what the stream job made of it), or
   - it is older than ``journal.redeliver_after_s`` (its writer may have died between the
     journal and Kafka, or an external broker lost it: nothing else tells).
   Each record is re-delivered at most once per epoch (``<state_dir>/run/settler.json``).
   A repeat is harmless: the stream job drops a second copy of an ``event_id`` to the
   duplicates topic, and the ledger keeps the first fate.
3. Torn tails are reported once each; the good prefix before a tear is kept and settled
   like any other.

Only one settler runs at a time (a lock next to the journal); the writers never wait for it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import Producer

from flywheel.broker import current_epoch, read_epoch
from flywheel.files import write_json_atomic
from flywheel.journal import (
    RECORD,
    VOID,
    Framed,
    Position,
    Tear,
    journal_bytes,
    trim,
    unsettled,
    writer_alive,
)
from flywheel.kafka import producer_config
from flywheel.layout import StateLayout
from flywheel.locks import try_lock
from pipelines.fates import FATES, FateLedger

if TYPE_CHECKING:
    from flywheel.settings import Settings


@dataclass
class SettleReport:
    writers: int = 0
    unsettled: int = 0  # records with no fate yet (after this pass)
    oldest_unsettled_s: float | None = None
    trimmed: int = 0  # records settled and trimmed by this pass
    redelivered: int = 0
    redelivery_failed: int = 0
    removed_writers: int = 0
    tears: list[str] = field(default_factory=list)
    epoch: int = 0
    skipped: bool = False  # another settler held the lock

    def describe(self) -> str:
        if self.skipped:
            return "another settler is running"
        age = f", oldest {self.oldest_unsettled_s:.0f}s" if self.oldest_unsettled_s is not None else ""
        return (
            f"journal: {self.unsettled} unsettled{age} in {self.writers} writer(s); trimmed {self.trimmed}, "
            f"re-delivered {self.redelivered}"
            + (f" ({self.redelivery_failed} failed)" if self.redelivery_failed else "")
            + (f"; {len(self.tears)} torn tail(s)" if self.tears else "")
        )


@dataclass
class SettlerState:
    """What the settler remembers between passes: the epoch it last re-delivered for, and
    per writer the position up to which it re-delivered in that epoch."""

    epoch_id: str | None = None
    redelivered_upto: dict[str, list[int]] = field(default_factory=dict)
    tears_reported: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=lambda: {"trimmed": 0, "redelivered": 0})
    last: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SettlerState:
        try:
            data = json.loads(path.read_text())
            return cls(
                data.get("epoch_id"),
                dict(data.get("redelivered_upto", {})),
                list(data.get("tears_reported", [])),
                dict(data.get("totals", {"trimmed": 0, "redelivered": 0})),
                dict(data.get("last", {})),
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()  # a torn state only means re-delivering once more: harmless

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.__dict__)


def read_state(settings: Settings) -> SettlerState:
    return SettlerState.load(StateLayout.of(settings).settler_state)


def settle(settings: Settings, log=print, now: float | None = None) -> SettleReport:
    """One pass (see the module docstring). Never raises for a broker that is down: what
    could not be re-delivered is tried again next pass."""

    layout = StateLayout.of(settings)
    root = layout.journal
    report = SettleReport()
    if not root.is_dir():
        return report
    lock = try_lock(root / "settler.lock", "a+b")  # one settler at a time; closed in finally
    if lock is None:
        report.skipped = True
        return report
    try:
        now = time.time() if now is None else now
        state = SettlerState.load(layout.settler_state)
        epoch = read_epoch(settings.state_dir) if settings.embedded_broker else None
        if epoch is not None:
            report.epoch = epoch.number
            if state.epoch_id != epoch.id:
                state.epoch_id, state.redelivered_upto = epoch.id, {}
        ledger = FateLedger.of(settings)
        try:
            redeliver: list[Framed] = []
            marks: dict[str, Position] = {}
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                report.writers += 1
                again, mark = _settle_writer(folder, ledger, settings, state, epoch, now, report)
                redeliver += again
                if mark is not None:
                    marks[folder.name] = mark
            if redeliver:
                failed = _redeliver(settings, redeliver)
                report.redelivered = len(redeliver) - failed
                report.redelivery_failed = failed
                if not failed:
                    for name, mark in marks.items():
                        state.redelivered_upto[name] = [mark.segment, mark.offset]
                    log(f"settler: re-delivered {len(redeliver)} record(s) that had no fate")
        finally:
            ledger.close()
        for tear in report.tears:
            if tear not in state.tears_reported:
                log(f"settler: {tear}")
                state.tears_reported.append(tear)
        state.tears_reported = state.tears_reported[-100:]
        state.totals["trimmed"] = state.totals.get("trimmed", 0) + report.trimmed
        state.totals["redelivered"] = state.totals.get("redelivered", 0) + report.redelivered
        state.last = {
            "time": now,
            "unsettled": report.unsettled,
            "oldest_unsettled_s": report.oldest_unsettled_s,
            "writers": report.writers,
            "epoch": report.epoch,
        }
        state.save(layout.settler_state)
        return report
    finally:
        lock.close()


def _settle_writer(
    folder: Path, ledger, settings, state: SettlerState, epoch, now: float, report: SettleReport
):
    """Trim one writer's settled prefix; return its records to re-deliver and the mark to
    remember once they were."""
    alive = writer_alive(folder)
    tears: list[Tear] = []
    frames = list(unsettled(folder, tears))
    report.tears += [t.describe() for t in tears]
    # A void covers one record: the latest of its ident written before it (the delivery that
    # failed). Not the later ones: a client told "not delivered" sends the event again, and
    # that retry was acknowledged (the first 2-hour soak lost 6 such retries). Not the earlier
    # ones either: an event acknowledged once and then resent in a batch that failed is still
    # acknowledged (the third soak lost 36 that way, when the broker then lost the first copy).
    latest: dict[str, Position] = {}
    voided: set[Position] = set()
    for f in frames:
        if f.kind == RECORD:
            latest[f.entry.ident] = f.end
        elif f.kind == VOID and f.entry.ident in latest:
            voided.add(latest.pop(f.entry.ident))
    records = [f for f in frames if f.kind == RECORD]
    fated = ledger.known(f.entry.ident for f in records)
    settled_upto: Position | None = None
    pending: list[Framed] = []
    for f in frames:
        done = f.kind == VOID or f.entry.ident in fated or f.end in voided
        if not pending and done:
            settled_upto = f.end
            if f.kind == RECORD:
                report.trimmed += 1
        elif f.kind == RECORD and not done:
            pending.append(f)
    if settled_upto is not None:
        trim(folder, settled_upto)
    if not pending and not alive:
        shutil.rmtree(folder, ignore_errors=True)
        report.removed_writers += 1
        return [], None
    report.unsettled += len(pending)
    if pending:
        age = now - min(f.written_at for f in pending)
        report.oldest_unsettled_s = max(report.oldest_unsettled_s or 0.0, age)
    upto = state.redelivered_upto.get(folder.name)
    done_upto = Position(*upto) if upto else None
    again = []
    for f in pending:
        if done_upto is not None and not (done_upto < f.end):
            continue  # re-delivered already in this epoch
        lost_with_broker = epoch is not None and f.written_at < epoch.started_at
        overdue = now - f.written_at > settings.journal.redeliver_after_s
        if lost_with_broker or overdue:
            again.append(f)
    return again, (again[-1].end if again else None)


def _redeliver(settings: Settings, frames: list[Framed]) -> int:
    """Produce ``frames`` again; return how many Kafka did not confirm."""

    failed = [0]

    def delivered(err, _msg) -> None:
        if err is not None:
            failed[0] += 1

    producer = Producer(producer_config(settings))
    for f in frames:
        while True:
            try:
                producer.produce(f.entry.topic, key=f.entry.key, value=f.entry.value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(settings.kafka.delivery_timeout_s + 5)
    return failed[0] + left


@dataclass
class Durability:
    """What ``flywheel status``, ``flywheel stream stats`` and ``/metrics`` say about it:
    the broker's epoch, the journal's backlog, what was re-delivered, the recorded fates."""

    epoch: int | None
    epoch_started_at: float | None
    unsettled: int | None
    oldest_unsettled_s: float | None
    settled_at: float | None
    trimmed_total: int
    redelivered_total: int
    fates: dict[str, int]
    journal_bytes: int

    def lines(self) -> list[str]:
        out = []
        if self.epoch is not None:
            restarts = self.epoch - 1
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.epoch_started_at or 0))
            out.append(
                f"embedded broker epoch {self.epoch} (started {since}; {restarts} restart(s) or rotation(s) "
                "before it: its topics hold only what came after)"
            )
        if self.unsettled is None:
            out.append("journal: no settler pass yet (the ingestor runs it)")
        else:
            age = f", oldest {self.oldest_unsettled_s:.0f}s" if self.oldest_unsettled_s else ""
            ago = time.time() - (self.settled_at or 0)
            out.append(
                f"journal: {self.unsettled:,} acknowledged record(s) without a fate yet{age} "
                f"({self.journal_bytes / 2**20:.1f} MB); last settled {ago:.0f}s ago; "
                f"{self.redelivered_total:,} re-delivered after broker restarts, "
                f"{self.trimmed_total:,} settled"
            )
        out.append("recorded fates: " + ", ".join(f"{k} {v:,}" for k, v in self.fates.items()))
        return out


def durability(settings: Settings) -> Durability:
    layout = StateLayout.of(settings)
    epoch = current_epoch(settings)
    state = read_state(settings)
    if layout.fates.is_file():
        ledger = FateLedger.of(settings)
        try:
            fates = ledger.counts()
        finally:
            ledger.close()
    else:
        fates = {**dict.fromkeys(FATES, 0), "repeats": 0}
    last = state.last
    return Durability(
        epoch.number if epoch else None,
        epoch.started_at if epoch else None,
        last.get("unsettled"),
        last.get("oldest_unsettled_s"),
        last.get("time"),
        state.totals.get("trimmed", 0),
        state.totals.get("redelivered", 0),
        fates,
        journal_bytes(layout.journal),
    )
