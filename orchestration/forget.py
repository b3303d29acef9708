"""Erasure on request: ``flywheel forget --event-id ID | --subject-id S``.

An erasure is a journaled sequence of idempotent steps (``STEPS``). Its journal
(``<state_dir>/privacy/forget/<receipt>.json``) is written before the first step and names
what is being erased; each finished step is recorded in it; the journal is removed after the
receipt is appended to the audit log. A process killed at any step leaves the journal, and
the next ``flywheel forget`` or ``flywheel model repair`` runs the steps left
(:func:`complete_pending`). The crash point before each step is ``forget:<step>``.

Steps:

1. ``tombstones``: the event ids (with their review answers' ids) and the subject's
   pseudonym go into ``flywheel.privacy.Forgotten``, under the erasure lock the ingestor
   holds while it writes a batch; from then on every intake refuses them and the ingestor
   stores nothing of a replay.
2. ``resolve``: every event id of the subject (offline store, review queue, waiting
   feedback in the live ledger) and the offline files and images they touch.
3. ``feast_offline``: the affected parquet files rewritten without the rows (each atomically).
4. ``feast_online``: the online rows.
5. ``images``: the images only these rows named (one another sample names stays).
6. ``review_queue``, 7. ``live_ledger`` (outcomes, waiting feedback and the served
   predictions they joined), 8. ``fates`` (their dead letters),
9. ``model_data``: each model's golden and bootstrap data, and every run and version folder's
   dataset copy (their per-record lineage keeps the ids: who learned from what stays known),
10. ``mlflow``: every version that trained on forgotten samples is tagged
    ``flywheel.trained_on_forgotten=<count>``,
11. ``receipt``: the deletion receipt (what, where, when, counts; no personal data) appended
    to ``<state_dir>/privacy/audit.jsonl``.

Topic data is not rewritten: it expires with ``kafka.retention_hours`` on an external broker
(the embedded broker keeps it in memory until its next rotation or restart).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_repo import store as feast_store
from flywheel.errors import ConfigError, FlywheelError
from flywheel.faults import crash_point
from flywheel.files import write_json_atomic
from flywheel.images import ImageError, open_image_store
from flywheel.layout import StateLayout
from flywheel.model_info import model_names
from flywheel.names import REVIEW_SUFFIX
from flywheel.privacy import ERASURE_LOCK, Forgotten, pseudonym, subject_key
from flywheel.stores import store_lock
from flywheel.tasks import all_image_columns
from orchestration.registry import Registry
from pipelines.fates import FateLedger
from pipelines.live import LiveLedger
from pipelines.review import review_event_id
from pipelines.review_queue import ReviewQueue
from training.model_store import ModelStore

if TYPE_CHECKING:
    from flywheel.settings import Settings

FORGET_LOCK = "forget"  # stores.store_lock name: one erasure at a time
STEPS = (
    "tombstones",
    "resolve",
    "feast_offline",
    "feast_online",
    "images",
    "review_queue",
    "live_ledger",
    "fates",
    "model_data",
    "mlflow",
    "receipt",
)


class ForgetError(FlywheelError):
    """An erasure was asked for wrongly (nothing named, both named)."""


@dataclass
class Erasure:
    """One erasure: its journal while under way (one writer: this module)."""

    receipt: str
    by: str  # "event" | "subject"
    subject: str | None  # the pseudonym (never the subject id)
    event_ids: list[str]  # everything erased: the events and their review answers' ids
    started_at: str
    found: list[str] = field(default_factory=list)  # the events named or found (no synthetic ids)
    files: dict[str, int] = field(default_factory=dict)  # offline file → rows of these events
    uris: list[str] = field(default_factory=list)  # images the rows named
    counts: dict[str, Any] = field(default_factory=dict)  # step → what it removed
    done: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, settings: Settings, event_id: str | None, subject_id: str | None) -> Erasure:
        subject = pseudonym(subject_key(settings), subject_id) if subject_id is not None else None
        return cls(
            receipt="fg-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
            by="subject" if subject else "event",
            subject=subject,
            event_ids=_events_for([event_id]) if event_id else [],
            started_at=datetime.now(UTC).isoformat(),
            found=[event_id] if event_id else [],
        )

    @classmethod
    def load(cls, path: Path) -> Erasure:
        return cls(**json.loads(path.read_text()))

    def save(self, folder: Path) -> None:
        write_json_atomic(folder / f"{self.receipt}.json", asdict(self))

    def digest(self, key: bytes) -> str:
        """HMAC-SHA256 (under the install's pseudonym key) of the sorted event ids: names the
        set without naming its members, and cannot be confirmed by guessing an id."""
        return hmac.new(key, "\n".join(sorted(self.found)).encode(), hashlib.sha256).hexdigest()

    def receipt_of(self, key: bytes, dry_run: bool = False) -> Receipt:
        removed = {k: v for k, v in self.counts.items() if k not in ("tombstones", "resolve")}
        if dry_run:
            removed = {"offline_rows": sum(self.files.values()), "offline_files": len(self.files)}
        return Receipt(
            self.receipt,
            self.by,
            self.started_at,
            datetime.now(UTC).isoformat(),
            len(self.found),
            self.digest(key),
            removed,
            dry_run=dry_run,
        )


@dataclass
class Receipt:
    """What the audit log keeps of an erasure: no event id, no subject, no content."""

    receipt: str
    by: str
    started_at: str
    finished_at: str
    events: int
    event_ids_hmac: str
    removed: dict[str, Any]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _events_for(event_ids: list[str]) -> list[str]:
    """The ids and the ids of their review answers (``<id>.review``)."""
    out = []
    for e in event_ids:
        out += [e] if e.endswith(REVIEW_SUFFIX) else [e, review_event_id(e)]
    return list(dict.fromkeys(out))


def forget(
    settings: Settings,
    event_id: str | None = None,
    subject_id: str | None = None,
    dry_run: bool = False,
    log=print,
) -> Receipt:
    """Erase one event or every event of one subject (see the module docstring); returns the
    receipt. ``dry_run`` resolves and counts, and changes nothing.

    The new erasure's tombstones and resolution come first (from then on its events are
    refused everywhere); then any erasure a crash cut short is completed (one that still
    fails is reported and left for the next try, never blocking this one); then the rest."""

    if (event_id is None) == (subject_id is None):
        raise ForgetError("name exactly one of --event-id or --subject-id")
    if event_id is not None and not event_id.strip():
        raise ForgetError("--event-id is empty")
    if subject_id is not None and not subject_id.strip():
        raise ForgetError("--subject-id is empty")
    erasure = Erasure.new(settings, event_id, subject_id)
    if dry_run:
        _resolve(settings, erasure, dry_run=True)
        return erasure.receipt_of(subject_key(settings), dry_run=True)
    with store_lock(settings.state_dir, FORGET_LOCK):  # one erasure at a time
        folder = StateLayout.of(settings).forget_journals
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        erasure.save(folder)
        _run(settings, erasure, folder, until="resolve")
        for path in sorted(folder.glob("fg-*.json")):
            if path.stem == erasure.receipt:
                continue
            try:
                done = _run(settings, Erasure.load(path), folder)
                log(f"completed the erasure {done.receipt} that was cut short")
            except Exception as exc:  # noqa: BLE001 - one stuck erasure must not block a new one
                log(f"the erasure {path.stem} that was cut short still fails ({type(exc).__name__}: {exc})")
        return _run(settings, erasure, folder)


def complete_pending(settings: Settings) -> list[Receipt]:
    """Run the steps left of every erasure a crash cut short (``model repair``)."""
    with store_lock(settings.state_dir, FORGET_LOCK):
        folder = StateLayout.of(settings).forget_journals
        if not folder.is_dir():
            return []
        done = [_run(settings, Erasure.load(path), folder) for path in sorted(folder.glob("fg-*.json"))]
        for stray in folder.glob(".fg-*.tmp"):  # a journal write cut short: the journal before it stands
            stray.unlink()
        return done


def _run(settings: Settings, erasure: Erasure, folder: Path, until: str | None = None) -> Receipt:
    """Run the steps of ``erasure`` not done yet (up to and including ``until``)."""
    for step in STEPS:
        if step not in erasure.done:
            crash_point(f"forget:{step}")
            result = _STEP_FUNCTIONS[step](settings, erasure)
            if result is not None:
                erasure.counts[step] = result
            erasure.done.append(step)
            erasure.save(folder)
        if step == until:
            return erasure.receipt_of(subject_key(settings))
    (folder / f"{erasure.receipt}.json").unlink(missing_ok=True)
    return erasure.receipt_of(subject_key(settings))


# ---- the steps --------------------------------------------------------------------------


def _tombstones(settings: Settings, erasure: Erasure) -> dict[str, int]:
    forgotten = Forgotten.of(settings)
    try:
        with store_lock(settings.state_dir, ERASURE_LOCK):  # the ingestor's batch write waits
            forgotten.add(erasure.receipt, erasure.event_ids, [erasure.subject] if erasure.subject else [])
    finally:
        forgotten.close()
    return {"event_ids": len(erasure.event_ids), "subjects": int(erasure.subject is not None)}


def _resolve(settings: Settings, erasure: Erasure, dry_run: bool = False) -> dict[str, int]:
    ids = set(erasure.event_ids)
    if erasure.subject:
        queue = ReviewQueue(settings)
        try:
            ids.update(queue.items_of_subject(erasure.subject))
        finally:
            queue.close()
        ledger = LiveLedger.of(settings)
        try:
            ids.update(ledger.pending_of_subject(erasure.subject))
        finally:
            ledger.close()
    subjects = {erasure.subject} if erasure.subject else set()
    match = feast_store.find_offline(settings, ids, subjects, all_image_columns())
    ids.update(match.sample_ids)
    erasure.found = sorted((ids - set(erasure.event_ids)) | set(erasure.found))
    erasure.event_ids = sorted(_events_for(sorted(ids)))
    erasure.files = match.files
    erasure.uris = sorted(match.uris)
    if not dry_run:  # each id is forgotten by itself too: datasets and lineage look ids up
        forgotten = Forgotten.of(settings)
        try:
            forgotten.add(erasure.receipt, erasure.event_ids)
        finally:
            forgotten.close()
    return {"events": len(erasure.event_ids), "offline_files": len(match.files)}


def _feast_offline(settings: Settings, erasure: Erasure) -> dict[str, int]:
    rows = feast_store.erase_offline(settings, sorted(erasure.files), set(erasure.event_ids))
    return {"rows": rows, "files_rewritten": len(erasure.files)}


def _feast_online(settings: Settings, erasure: Erasure) -> dict[str, Any]:
    if not erasure.event_ids:
        return {"rows": 0}
    from feast.errors import FeatureViewNotFoundException

    try:
        return {"rows": feast_store.delete_online(settings, erasure.event_ids)}
    except ConfigError as exc:  # Redis: said in the receipt, and the erasure goes on
        return {"rows": 0, "skipped": str(exc)}
    except FeatureViewNotFoundException:  # nothing was ever ingested here: no online rows
        return {"rows": 0}


def _images(settings: Settings, erasure: Erasure) -> dict[str, int]:
    if not erasure.uris:
        return {"deleted": 0, "kept_shared": 0}
    erased = set(erasure.event_ids)
    kept = feast_store.offline_uris(settings, all_image_columns(), erased)
    models = ModelStore(settings.state_dir)
    for name in model_names(settings.state_dir):  # golden, bootstrap and run datasets name images too
        kept |= models.image_uris(name, all_image_columns(), erased)
    store = open_image_store(settings.image_store_uri)
    deleted = 0
    for uri in erasure.uris:
        if uri in kept:
            continue
        try:
            deleted += store.delete(uri)
        except ImageError:  # a URI of another store (an image task's external store): not ours
            continue
    return {"deleted": deleted, "kept_shared": len(set(erasure.uris) & kept)}


def _review_queue(settings: Settings, erasure: Erasure) -> dict[str, int]:
    queue = ReviewQueue(settings)
    try:
        return {"items": queue.forget(erasure.event_ids)}
    finally:
        queue.close()


def _live_ledger(settings: Settings, erasure: Erasure) -> dict[str, int]:
    ledger = LiveLedger.of(settings)
    try:
        return ledger.forget(erasure.event_ids)
    finally:
        ledger.close()


def _fates(settings: Settings, erasure: Erasure) -> dict[str, int]:
    ledger = FateLedger.of(settings)
    try:
        marked, dropped = ledger.forget(erasure.event_ids)
    finally:
        ledger.close()
    return {"fates_marked": marked, "dead_letters": dropped}


def _model_data(settings: Settings, erasure: Erasure) -> dict[str, int]:
    models = ModelStore(settings.state_dir)
    ids = set(erasure.event_ids)
    golden_or_bootstrap = copies = folders = 0
    for name in model_names(settings.state_dir):
        golden_or_bootstrap += models.erase_samples(name, ids)
        for folder in models.folders(name):
            removed = folder.erase_samples(ids)
            copies += removed
            folders += bool(removed)
    return {"golden_and_bootstrap_rows": golden_or_bootstrap, "dataset_rows": copies, "folders": folders}


def _mlflow(settings: Settings, erasure: Erasure) -> dict[str, Any]:
    """Tag every version that trained on a forgotten sample with the count (all erasures so far)."""
    ids = set(erasure.event_ids)
    models = ModelStore(settings.state_dir)
    forgotten = Forgotten.of(settings)
    registry = None
    tagged: dict[str, int] = {}
    try:
        for name in model_names(settings.state_dir):
            for number in models.versions(name):
                lineage = models.version(name, number).sample_lineage()
                if lineage is None:
                    continue
                trained = lineage.ids("train") | lineage.ids("validation")
                if not trained & ids:
                    continue
                count = len(forgotten.which((i, None) for i in trained))
                registry = registry or Registry(settings)
                if registry.tag_forgotten(name, number, count):
                    tagged[f"{name}/v{number}"] = count
    finally:
        forgotten.close()
    return {"versions_tagged": tagged}


def _receipt(settings: Settings, erasure: Erasure) -> None:
    """Append the receipt unless an earlier try appended it already (then the journal stayed)."""
    path = StateLayout.of(settings).audit_log
    if any(r.receipt == erasure.receipt for r in receipts(settings)):
        return
    line = json.dumps(erasure.receipt_of(subject_key(settings)).to_dict(), sort_keys=True) + "\n"
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        line = "\n" + line  # after a torn last line (a kill mid-append), on a line of its own
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


_STEP_FUNCTIONS = {
    "tombstones": _tombstones,
    "resolve": _resolve,
    "feast_offline": _feast_offline,
    "feast_online": _feast_online,
    "images": _images,
    "review_queue": _review_queue,
    "live_ledger": _live_ledger,
    "fates": _fates,
    "model_data": _model_data,
    "mlflow": _mlflow,
    "receipt": _receipt,
}


def receipts(settings: Settings) -> list[Receipt]:
    """The audit log's receipts, oldest first (a torn last line, from a kill mid-append, is skipped)."""
    path = StateLayout.of(settings).audit_log
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(Receipt(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return out
