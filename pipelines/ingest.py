"""The ingestor, where every fate lands for good: ``<prefix>.clean`` → Feast online store +
append-only offline files, ``<prefix>.predictions`` → the live ledger (``pipelines.live``),
``<prefix>.review`` → the review queue, ``<prefix>.dlq`` → the dead-letter table; and each
record's fate (duplicates too) → the fate ledger (``pipelines.fates``), which the settler
reads to trim the edge journal.

    consume (read_committed) ─► micro-batch (≤ batch_size records or ≤ batch_ms) ─►
    live ledger (keep predictions, join feedback to them, record outcomes) ─►
    write online (one batch) ─► write one offline parquet file ─► review queue ─►
    fate ledger ─► commit the batch's offsets

Feedback that carries only a ``prediction_id`` is joined to the served prediction (version,
prediction, confidence) before it becomes a Feast row. Offsets are committed only after
every write succeeded, so a crash re-delivers the batch instead of losing it. A failed
write is retried with exponential backoff, for as long as it takes (each retry is logged);
the batch is never skipped. Re-delivery after a crash between write and commit is
harmless: the online store upserts by ``sample_id``, the offline reader keeps one row per
``sample_id`` (see ``feature_repo.store``) and the ledger's rows are keyed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, TopicPartition

from feature_repo.definitions import CREATED, FEATURES, JOIN_KEY, SUBJECT, TIMESTAMP
from feature_repo.online_write import OnlineWriter
from feature_repo.store import open_store, write_offline_batch
from flywheel.broker import current_epoch
from flywheel.errors import BrokerError, FlywheelError
from flywheel.images import open_image_store
from flywheel.kafka import Topics, client_config, group_id
from flywheel.privacy import ERASURE_LOCK, Forgotten
from flywheel.stores import store_lock
from flywheel.tasks import spec_class
from pipelines.dlq import DlqRecord
from pipelines.fates import CLEAN, DLQ, DUPLICATE, FORGOTTEN, PREDICTION, REVIEW, Fate, FateLedger
from pipelines.live import LiveLedger
from pipelines.predictions import PredictionRecord, PredictionRecordError
from pipelines.records import DuplicateRecord, RecordError, RoutedRecord
from pipelines.review_queue import ReviewQueue
from pipelines.settler import settle

if TYPE_CHECKING:
    from flywheel.settings import Settings

BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0


class IngestError(FlywheelError):
    """A record on the clean topic cannot become a Feast row (the stream job wrote it)."""


def parse_clean(value: bytes) -> RoutedRecord:
    """A clean-topic record, or IngestError (the stream job wrote something else)."""
    try:
        return RoutedRecord.from_json(value)
    except RecordError as exc:
        raise IngestError(
            f"clean record is {exc}; the ingestor stops here without committing, so nothing is "
            "skipped. Inspect the record, fix the producer of the clean topic, then restart "
            "`flywheel ingest`."
        ) from exc


def sample_row(record: RoutedRecord | bytes, ingested_at: datetime, images=None) -> dict:
    """One Feast row from a clean-topic record (a ``pipelines.records.RoutedRecord``, or its
    bytes): the fields every event has, then its task's (the spec's ``feast_columns``; an
    image task writes the images to ``images``, the image store, and keeps their URIs and
    hashes)."""
    if not isinstance(record, RoutedRecord):
        record = parse_clean(record)
    row = dict.fromkeys(FEATURES)
    row.update(
        {
            JOIN_KEY: record.event_id,
            TIMESTAMP: record.event_time,
            CREATED: ingested_at,
            "model_name": record.model_name,
            "model_version": record.model_version,
            "task": record.task,
            "source": record.source,
            "confidence": record.confidence,
            "low_confidence": record.low_confidence,
            "label_source": record.label_source,
            "pii_masks": record.pii_masks,
            SUBJECT: record.subject,
        }
    )
    try:
        row.update(spec_class(record.task).feast_columns(record, images))
    except FlywheelError as exc:
        raise IngestError(
            f"clean record {record.event_id} cannot become a Feast row: {exc}; the ingestor stops "
            "here without committing, so nothing is skipped. Fix the cause, then restart `flywheel ingest`."
        ) from exc
    return row


def live_value(record: RoutedRecord) -> float | None:
    return spec_class(record.task).live_value(record)


def _epoch_number(settings: Settings) -> int:
    """The embedded broker's epoch (0 with an external broker): recorded beside each fate."""

    epoch = current_epoch(settings)
    return epoch.number if epoch is not None else 0


def batch_name(offsets: dict[int, tuple[int, int]]) -> str:
    """A stable file name for the batch covering ``{partition: (first, last)}`` offsets."""
    key = ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(offsets.items()))
    return hashlib.sha1(key.encode()).hexdigest()[:20]


@dataclass
class IngestStats:
    batches: int = 0
    rows: int = 0  # Feast rows (clean records)
    predictions: int = 0  # prediction-log records kept in the live ledger
    bad_predictions: int = 0  # prediction-log records not written by the serving app (logged, skipped)
    retries: int = 0
    forgotten: int = 0  # records of forgotten events or subjects (replays), stored nowhere
    seconds: float = 0.0
    last_offsets: dict[int, int] = field(default_factory=dict)  # of the clean topic

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class ConsumerWatch:
    """When the ingestor's consumer must be replaced: the embedded broker started a new epoch
    (its groups and offsets are gone), or the consumer has held no partition for
    ``STUCK_S`` (seen in the chaos soak: after a broker restart under load, a librdkafka
    consumer never joined its group again, while a new one joined in 8 s)."""

    STUCK_S = 60.0

    def __init__(self, settings: Settings):
        self.settings = settings
        self.epoch = self._epoch()
        self.since = time.monotonic()
        self.checked = 0.0

    def _epoch(self) -> str | None:
        epoch = current_epoch(self.settings)
        return epoch.id if epoch else None

    def stuck(self, assigned: bool) -> str | None:
        now = time.monotonic()
        if assigned:
            self.since = now
        elif now - self.since > self.STUCK_S:
            return f"no partition assigned for {now - self.since:.0f}s"
        if now - self.checked > 2.0:
            self.checked = now
            if self._epoch() != self.epoch:
                return "the embedded broker restarted (a new epoch)"
        return None


class Ingestor:
    """Consumes the clean topic and writes micro-batches to Feast (see the module docstring).

    ``store`` is a Feast FeatureStore (opened from the settings when not given).
    ``after_write`` is called with the batch's offsets after the writes and before the
    commit; tests use it to crash exactly there.
    """

    def __init__(
        self,
        settings: Settings,
        store=None,
        log: Callable[[str], None] = print,
        after_write: Callable[[dict], None] | None = None,
        settle: bool = True,
    ):
        self.settings = settings
        topics = Topics.from_settings(settings)
        self.topic, self.predictions_topic = topics.clean, topics.predictions
        self.review_topic, self.dlq_topic, self.duplicates_topic = (
            topics.review,
            topics.dlq,
            topics.duplicates,
        )
        self.log = log
        self.after_write = after_write
        self.settle = settle and settings.journal.enabled
        self.stop_event = threading.Event()
        if store is None:
            store = open_store(settings)
        self.store = store

        self.images = open_image_store(settings.image_store_uri)

        self.ledger = LiveLedger.of(settings)

        self.fates = FateLedger.of(settings)
        self.queue = ReviewQueue(settings)
        self.forgotten = Forgotten.of(settings)
        self._pruned_at = 0.0
        self._online: OnlineWriter | None = None  # made on the first write (it reads the registry)

    def stop(self) -> None:
        self.stop_event.set()

    def _consumer(self):
        """A consumer *assigned* every partition of the five topics, reading from the group's
        committed offsets (earliest when none). Not a group member: one ingestor runs per
        state dir (it is the fate ledger's only writer), and tansu's group coordinator was
        seen, after a broker restart under load, never to let a member join again (the
        chaos soak: no partition for minutes, consumer after consumer), while commits of an
        assigned consumer always worked."""

        conf = client_config(
            self.settings,
            **{
                "group.id": group_id(self.settings, self.settings.feast.group_id),
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "fetch.wait.max.ms": self.settings.kafka.fetch_wait_ms,
            },
        )
        consumer = Consumer(conf)
        topics = [
            self.topic,
            self.predictions_topic,
            self.review_topic,
            self.dlq_topic,
            self.duplicates_topic,
        ]
        try:
            metadata = consumer.list_topics(timeout=10)
        except Exception as exc:
            consumer.close()
            raise BrokerError(
                f"cannot read the topics' partitions ({exc}); is the broker up? (`flywheel status`)"
            ) from exc
        partitions = []
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                if topic == self.topic:
                    consumer.close()
                    raise BrokerError(f"{topic} does not exist: create the topics (`flywheel broker start`)")
                self.log(f"{topic} does not exist: create it like the other topics; feedback still flows")
                continue
            partitions += [TopicPartition(topic, p) for p in sorted(found.partitions)]
        consumer.assign(partitions)  # each at the group's committed offset, else earliest
        return consumer

    def run(
        self, until_caught_up: bool = False, progress: Callable[[IngestStats], None] | None = None
    ) -> IngestStats:
        """Ingest until stopped (or, with ``until_caught_up``, until every partition is at its end)."""

        feast = self.settings.feast
        stats = IngestStats()
        started = time.monotonic()
        consumer = self._consumer()
        watch = ConsumerWatch(self.settings)
        settler = threading.Thread(target=self._settle_forever, name="settler", daemon=True)
        if self.settle:
            settler.start()
        batch: list = []
        at_end: set[tuple[str, int]] = set()
        batch_started = 0.0
        missing_log = False
        # The heap is large and long-lived by now (Feast, pandas, pyarrow, protobuf, the stores).
        # Measured before issue 30.5 (bench/bench_ingest_rows.py), the garbage collections that
        # walked it took 32 of 128 us a row in batches of 1,000 (37 of 115 in batches of 2,000),
        # 3 once it was frozen. The online write without a proto per feature removed most of
        # them too (about 1 us a row now, frozen or not); frozen, no allocation-heavy stage can
        # make the collector walk the whole heap again. What a batch makes is still collected.
        # Undone when the run ends (tests run several in one process).
        gc.collect()
        gc.freeze()
        try:
            while not self.stop_event.is_set():
                wait = feast.ingest_batch_ms / 1000
                if batch:
                    wait = max(0.0, batch_started + wait - time.monotonic())
                for msg in consumer.consume(max(1, feast.ingest_batch_size - len(batch)), wait):
                    err = msg.error()
                    if err is None:
                        if not batch:
                            batch_started = time.monotonic()
                        batch.append(msg)
                        at_end.discard((msg.topic(), msg.partition()))
                    elif err.code() == KafkaError._PARTITION_EOF:
                        at_end.add((msg.topic(), msg.partition()))
                    elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART and msg.topic() != self.topic:
                        if not missing_log:  # a stack from before these topics: feedback still flows
                            self.log(
                                f"{msg.topic()} does not exist: create it like the other "
                                "topics (`flywheel broker start` does, embedded)"
                            )
                        missing_log = True
                    else:
                        raise BrokerError(f"consuming {msg.topic() or self.topic}: {err.str()}")
                full = len(batch) >= feast.ingest_batch_size
                due = batch and time.monotonic() - batch_started >= feast.ingest_batch_ms / 1000
                assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                caught_up = bool(assigned) and assigned <= at_end
                if batch and (full or due or caught_up):
                    self._write_and_commit(consumer, batch, stats)
                    stats.seconds = time.monotonic() - started
                    if progress:
                        progress(stats)
                    batch = []
                if until_caught_up and caught_up and not batch:
                    break
                why = watch.stuck(bool(assigned))
                if why and not batch:  # a batch in hand is written first; its offsets die with the consumer
                    self.log(f"rebuilding the Kafka consumer: {why}")
                    consumer.close()
                    consumer = self._consumer()
                    at_end.clear()
                    watch = ConsumerWatch(self.settings)
        finally:
            consumer.close()  # without committing: an unwritten batch is consumed again
            self.ledger.close()
            self.fates.close()
            self.queue.close()
            gc.unfreeze()
        stats.seconds = time.monotonic() - started
        return stats

    def _write_and_commit(self, consumer, batch: list, stats: IngestStats) -> None:

        now = datetime.now(UTC)
        clean = [m for m in batch if m.topic() == self.topic]
        served = self._prediction_records([m for m in batch if m.topic() == self.predictions_topic], stats)
        records = [parse_clean(m.value()) for m in clean]
        reviews, fates, dead = self._other_fates(batch)
        offsets: dict[tuple[str, int], tuple[int, int]] = {}
        for m in batch:
            key = (m.topic(), m.partition())
            first, last = offsets.get(key, (m.offset(), m.offset()))
            offsets[key] = (min(first, m.offset()), max(last, m.offset()))
        clean_offsets = {p: span for (t, p), span in offsets.items() if t == self.topic}

        def write() -> None:
            joined = self.ledger.ingest(served, records, live_value, now)
            if joined:
                self._write([sample_row(r, now, self.images) for r in joined], clean_offsets)

        def settle() -> None:
            if reviews:
                self.queue.add(reviews)
            all_fates = [Fate(r.event_id, CLEAN) for r in records]
            all_fates += [Fate(p.prediction_id, PREDICTION) for p in served]
            self.fates.record(all_fates + fates, _epoch_number(self.settings), dead)

        # Checked, written and settled under the erasure lock: a `forget` (orchestration.forget)
        # either finds this batch's rows, or this batch finds its tombstones.
        with store_lock(self.settings.state_dir, ERASURE_LOCK):
            gone = self.forgotten.which((r.event_id, r.subject) for r in records + reviews)
            gone |= self.forgotten.which((i, None) for i in dead)  # dead letters keyed by event id
            if gone:  # a replay of forgotten data: nothing of it is stored again
                records = [r for r in records if r.event_id not in gone]
                reviews = [r for r in reviews if r.event_id not in gone]
                dead = {i: body for i, body in dead.items() if i not in gone}
                fates = [f for f in fates if f.ident not in gone] + [Fate(i, FORGOTTEN) for i in sorted(gone)]
                stats.forgotten += len(gone)
            self._with_retry(write, stats)
            self._with_retry(settle, stats)
        if self.after_write:
            self.after_write(clean_offsets)
        consumer.commit(
            offsets=[TopicPartition(t, p, last + 1) for (t, p), (_, last) in offsets.items()],
            asynchronous=False,
        )
        self._prune(now)
        stats.batches += 1
        stats.rows += len(records)
        stats.predictions += len(served)
        stats.last_offsets.update({p: last for p, (_, last) in clean_offsets.items()})

    def _settle_forever(self) -> None:
        """The settler (``pipelines.settler``) beside the fate ledger's writer: trims the edge
        journal and re-delivers what the broker lost, every ``journal.settle_interval_s``."""

        pause = self.settings.journal.settle_interval_s
        while not self.stop_event.wait(pause):
            started = time.monotonic()
            try:
                report = settle(self.settings, log=self.log)
            except Exception as exc:  # noqa: BLE001 - reported; the next pass tries again
                self.log(f"settler: pass failed ({type(exc).__name__}: {exc}); trying again")
                continue
            if report.redelivered or report.redelivery_failed:
                self.log(f"settler: {report.describe()}")
            # a long backlog makes a pass slow: never spend more than a tenth of the time on it
            pause = max(self.settings.journal.settle_interval_s, 10 * (time.monotonic() - started))

    def _other_fates(self, batch: list) -> tuple[list, list, dict[str, str]]:
        """The review records (for the queue), the fates of review, dead-letter and duplicate
        records, in that order (a duplicate gives way to its original's fate), and the
        dead-letter bodies by ident. A record of these topics that does not parse was written
        by something other than the stream job: it is logged and kept as a dead letter."""

        reviews, fates, duplicates, dead = [], [], [], {}
        unknown_models: list[RoutedRecord] = []
        for m in batch:
            topic = m.topic()
            try:
                if topic == self.review_topic:
                    record = RoutedRecord.from_json(m.value())
                    reviews.append(record)
                elif topic == self.dlq_topic:
                    letter = DlqRecord.from_json(m.value())
                    ident = letter.key or f"~dlq:{m.partition()}:{m.offset()}"
                    fates.append(Fate(ident, DLQ))
                    dead[ident] = m.value().decode("utf-8", "replace")
                elif topic == self.duplicates_topic:
                    duplicates.append(Fate(DuplicateRecord.from_json(m.value()).event_id, DUPLICATE))
            except RecordError as exc:
                ident = f"~unreadable:{topic}:{m.partition()}:{m.offset()}"
                where = f"{topic}[{m.partition()}]@{m.offset()}"
                self.log(f"{where} is not the stream job's record ({exc}); kept as {ident}")
                dead[ident] = (m.value() or b"").decode("utf-8", "replace")
                fates.append(Fate(ident, DLQ))
        reviews, unknown_models = self.queue.known_models(reviews)
        fates += [Fate(r.event_id, REVIEW) for r in reviews]
        for r in unknown_models:
            fates.append(Fate(r.event_id, DLQ))
            dead[r.event_id] = json.dumps(
                {
                    "reason": {
                        "code": "unknown_model",
                        "message": f"no model {r.model_name[:128]!r} in this state dir: nobody can review "
                        "its predictions; bootstrap the model first, then resend",
                    },
                    "event_id": r.event_id,
                }
            )
        return reviews, fates + duplicates, dead

    def _prediction_records(self, messages: list, stats: IngestStats) -> list:
        records = []
        for m in messages:
            try:
                records.append(PredictionRecord.from_json(m.value()))
            except PredictionRecordError as exc:
                stats.bad_predictions += 1
                self.log(
                    f"skipped {m.topic()}[{m.partition()}]@{m.offset()}: {exc} (only the serving app "
                    "writes this topic; feedback naming it keeps its own fields)"
                )
        return records

    def _prune(self, now: datetime) -> None:
        """Once an hour: forget served predictions past ``monitor.retention_days`` and fates
        past ``journal.fates_retention_days``."""

        if time.monotonic() - self._pruned_at < 3600:
            return
        self._pruned_at = time.monotonic()
        self.ledger.prune(now - timedelta(days=self.settings.monitor.retention_days))
        self.fates.prune(time.time() - self.settings.journal.fates_retention_days * 86400)

    def _write(self, rows: list[dict], offsets) -> None:
        """One online write (``feature_repo.online_write``), then one offline parquet file."""

        if self._online is None:
            self._online = OnlineWriter(self.store)
        self._online.write(rows)
        write_offline_batch(self.settings, rows, batch_name(offsets))

    def _with_retry(self, action: Callable[[], None], stats: IngestStats) -> None:
        delay = BACKOFF_START_S
        while True:
            try:
                action()
                return
            except IngestError:
                raise  # a record that can never become a row: stop here, uncommitted (see sample_row)
            except Exception as exc:  # any store failure: retry, never skip the batch
                if self.stop_event.is_set():
                    raise
                stats.retries += 1
                self.log(
                    f"writing a batch to Feast failed ({type(exc).__name__}: {exc}); retrying in {delay:.1f}s"
                )
                self.stop_event.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
