"""Per-record lineage: where one event went, and what one version's data was.

* :func:`event_lineage` (``flywheel lineage event ID``, ``GET /v1/lineage/events/{id}``):
  the event's fate in the stream (``pipelines.fates``), its Feast rows (offline files, the
  online row), its images, its review item (and its review answer), the versions that
  trained on it or held it out (each version's ``samples.parquet``,
  ``training.version.SampleLineage``), how many predictions those versions served (the live
  ledger), and whether it was forgotten.
* :func:`version_lineage` (``flywheel lineage version NAME V``): a version's samples by role,
  origin, label, source and ingestion day, with the SHA-256 of its training id set.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from feature_repo import store as feast_store
from feature_repo.definitions import CREATED, JOIN_KEY
from flywheel.errors import FlywheelError
from flywheel.model_info import model_names
from flywheel.names import REVIEW_SUFFIX
from flywheel.privacy import Forgotten
from flywheel.tasks import all_image_columns
from pipelines.fates import FateLedger
from pipelines.live import LiveLedger
from pipelines.review import review_event_id
from pipelines.review_queue import ReviewQueue
from training.model_store import ModelStore

if TYPE_CHECKING:
    from flywheel.settings import Settings


@dataclass
class VersionUse:
    model: str
    version: int
    roles: list[str]  # train, validation, golden, old, new
    predictions_served: int  # still in the live ledger (monitor.retention_days)


@dataclass
class EventLineage:
    event_id: str
    fate: str | None  # clean, review, dlq, duplicate, forgotten; None: no fate recorded (or pruned)
    forgotten: bool
    offline_files: dict[str, int] = field(default_factory=dict)
    online_row: bool = False
    images: list[str] = field(default_factory=list)
    review_item: dict[str, str] | None = None  # model, status
    review_answer: dict[str, Any] | None = None  # the agreed answer's event id and its fate
    live_outcomes: int = 0
    versions: list[VersionUse] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def event_lineage(settings: Settings, event_id: str) -> EventLineage:
    fates = FateLedger.of(settings)
    forgotten = Forgotten.of(settings)
    try:
        answer_id = None if event_id.endswith(REVIEW_SUFFIX) else review_event_id(event_id)
        out = EventLineage(
            event_id,
            fates.fate_of(event_id),
            bool(forgotten.which([(event_id, None)])),
        )
        if answer_id is not None and (answer_fate := fates.fate_of(answer_id)) is not None:
            out.review_answer = {"event_id": answer_id, "fate": answer_fate}
    finally:
        fates.close()
        forgotten.close()
    match = feast_store.find_offline(settings, {event_id}, set(), all_image_columns())
    out.offline_files, out.images = match.files, sorted(match.uris)
    try:
        out.online_row = bool(feast_store.online_has(settings, [event_id]))
    except FlywheelError:  # no store applied yet, or Redis: not listed
        out.online_row = False
    queue = ReviewQueue(settings)
    try:
        found = queue.lookup(event_id)
        out.review_item = None if found is None else {"model": found[0], "status": found[1]}
    finally:
        queue.close()
    ledger = LiveLedger.of(settings, readonly=True)
    try:
        out.live_outcomes = ledger.outcome_count([event_id])
        ids = {event_id} | ({answer_id} if answer_id else set())
        models = ModelStore(settings.state_dir)
        for name in model_names(settings.state_dir):
            for number in models.versions(name):
                lineage = models.version(name, number).sample_lineage()
                if lineage is None:
                    continue
                rows = lineage.frame[lineage.frame["sample_id"].isin(ids)]
                if len(rows):
                    roles = sorted(set(rows["role"]))
                    out.versions.append(VersionUse(name, number, roles, ledger.served_count(name, number)))
    finally:
        ledger.close()
    return out


@dataclass
class VersionSummary:
    model: str
    version: int
    samples: int
    train_ids_sha256: str
    by_role: dict[str, int]
    by_origin: dict[str, int]  # training samples: new window, replay, bootstrap
    by_label: dict[str, int]  # training samples
    by_source: dict[str, int]  # training samples (from the offline store; "bootstrap" when not there)
    by_day: dict[str, int]  # training samples by ingestion day
    forgotten: int  # training and validation samples erased since
    lineage_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_lineage(settings: Settings, model: str, version: int) -> VersionSummary:
    folder = ModelStore(settings.state_dir).version(model, version)
    lineage = folder.sample_lineage()
    if lineage is None:
        raise FlywheelError(
            f"{model} v{version} was trained before per-record lineage was kept: it has no "
            f"{folder.SAMPLES}; its counts are in `flywheel model history {model}`"
        )
    frame = lineage.frame
    train = frame[frame["role"] == "train"]
    entities = feast_store.sample_entities(settings, model, columns=("source",))
    joined = train.merge(
        entities[[JOIN_KEY, CREATED, "source"]].rename(columns={JOIN_KEY: "sample_id"}),
        on="sample_id",
        how="left",
    )
    sources = Counter(s if isinstance(s, str) else "bootstrap" for s in joined["source"])
    days = Counter(t.date().isoformat() if t == t and t is not None else "bootstrap" for t in joined[CREATED])
    learned = frame[frame["role"].isin(("train", "validation"))]["sample_id"]
    forgotten = Forgotten.of(settings)
    try:  # train and validation, as the MLflow tag flywheel.trained_on_forgotten counts
        erased = len(forgotten.which((i, None) for i in learned))
    finally:
        forgotten.close()
    labels = Counter(str(v) for v in train["label"] if v is not None and v == v)
    return VersionSummary(
        model,
        version,
        len(frame),
        lineage.digest("train"),
        dict(Counter(frame["role"])),
        dict(Counter(train["origin"])),
        dict(sorted(labels.items())),
        dict(sources.most_common()),
        dict(sorted(days.items())),
        erased,
        (folder.path / folder.SAMPLES).stat().st_size,
    )
