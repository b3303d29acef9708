"""Prometheus metrics an operator scrapes: ``/metrics`` on the HTTP app and on ``flywheel run``
(``run.metrics_port``), through ``prometheus_client``.

Two kinds:

- **State**, read at each scrape by ``StateCollector`` (so any process shows the same
  picture): records per topic (the sum of the partitions' end offsets), DLQ records by
  reason code, consumer lag of the stream job and the ingestor, the stream job's state and
  restarts, review-queue depth, escalations and the age of the oldest pending item, each
  model's champion version, its decisions by action, and its live metric per version.
  A source that cannot be read at a scrape (the broker is down) reports
  ``flywheel_metrics_source_up{source} 0``; the others still answer.
- **Events of this process**: retrain runs by outcome with their durations (``RETRAINS``,
  observed where retrains run: ``flywheel run``'s readiness check) and the HTTP app's
  feedback and predictions (``FEEDBACK``, ``PREDICTIONS``, in ``pipelines.http_api``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flywheel.errors import FlywheelError
from flywheel.kafka import Topics
from flywheel.tasks import spec_class
from orchestration import history
from pipelines import flink_cluster, job_health
from pipelines.dlq import DlqRecord
from pipelines.lag import consumer_lags, topic_ends
from pipelines.live import LedgerError, LiveLedger
from pipelines.records import RecordError
from pipelines.review_queue import ReviewQueue
from pipelines.settler import durability
from pipelines.stream_job import job_name
from pipelines.topic_reader import read_new
from training.model_store import ModelStore

if TYPE_CHECKING:
    from flywheel.settings import Settings

log = logging.getLogger("flywheel.metrics")

RETRAINS = Histogram(
    "flywheel_retrain_duration_seconds",
    "Retrain runs of this process by model and outcome (promoted, rejected, not-ready, ...) "
    "and how long each took",
    ["model", "status"],
    buckets=(1, 5, 15, 60, 180, 600, 1800, 3600, 7200),
)


def _dlq_identity(value: bytes | None) -> str:
    return hashlib.sha256(value or b"").hexdigest()[:32]


class DlqReasons:
    """DLQ records by reason code, read incrementally (the DLQ is small; the marks notice a
    recreated topic, and then it is counted again from its start)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.marks: dict[int, tuple[int, str]] = {}
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def read(self) -> dict[str, int]:
        with self.lock:
            topic = Topics.from_settings(self.settings).dlq
            while True:
                batch = read_new(self.settings, topic, self.marks, 10.0, 50_000, identity=_dlq_identity)
                if batch.reset:  # the topic was recreated: count all of it again from its start
                    self.counts.clear()
                    self.marks = {}
                    continue
                for value in batch.values:
                    try:
                        self.counts[DlqRecord.from_json(value).code] += 1
                    except RecordError:
                        self.counts["unreadable"] += 1
                self.marks.update(batch.marks)
                if len(batch.values) < 50_000:
                    return dict(self.counts)


class StateCollector(Collector):
    """The loop's state as gauges, read at each scrape (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dlq = DlqReasons(settings)

    def describe(self):
        return []  # nothing is read when the collector is registered

    def collect(self):
        up = GaugeMetricFamily(
            "flywheel_metrics_source_up", "1 when the source could be read at this scrape", labels=["source"]
        )
        kafka_up = True
        for source, read in (
            ("kafka", self._kafka),
            ("dlq", self._dlq),
            ("stream_job", self._stream_job),
            ("review_queue", self._review),
            ("models", self._models),
            ("durability", self._durability),
        ):
            if source == "dlq" and not kafka_up:  # the same broker: do not wait for it twice
                up.add_metric([source], 0)
                continue
            started = time.monotonic()
            try:
                families = list(read())
            except Exception as exc:  # noqa: BLE001 - one source down must not hide the others (up 0)
                log.warning("metrics: %s could not be read: %s: %s", source, type(exc).__name__, exc)
                up.add_metric([source], 0)
                kafka_up = kafka_up and source != "kafka"
                continue
            up.add_metric([source], 1)
            log.debug("metrics: %s read in %.3fs", source, time.monotonic() - started)
            yield from families
        yield up

    # ---- sources -------------------------------------------------------------------

    def _kafka(self):
        s = self.settings
        topics = Topics.from_settings(s)
        ends = topic_ends(s)
        offsets = GaugeMetricFamily(
            "flywheel_topic_offset",
            "Sum of the topic's partition end offsets: its records, plus one marker per transaction "
            "commit for the stream job's outputs",
            labels=["topic"],
        )
        for topic in topics.all():
            offsets.add_metric([topic.rsplit(".", 1)[-1]], sum(ends.get(topic, {}).values()))
        yield offsets
        lag = GaugeMetricFamily(
            "flywheel_consumer_lag",
            "End offset minus the group's committed offset, summed over the topic's partitions (on "
            "the job's transactional outputs a caught-up reader still shows the trailing commit markers, "
            "about one per partition)",
            labels=["group", "topic"],
        )
        for row in consumer_lags(s, ends):
            lag.add_metric([row.group, row.topic], row.behind)
        yield lag

    def _durability(self):
        d = durability(self.settings)
        epoch = GaugeMetricFamily("flywheel_broker_epoch", "embedded broker starts in this state dir")
        epoch.add_metric([], d.epoch or 0)
        unsettled = GaugeMetricFamily(
            "flywheel_journal_unsettled", "acknowledged records without a recorded fate (last settler pass)"
        )
        unsettled.add_metric([], d.unsettled or 0)
        size = GaugeMetricFamily("flywheel_journal_bytes", "bytes held by the edge journal")
        size.add_metric([], d.journal_bytes)
        redelivered = GaugeMetricFamily(
            "flywheel_journal_redelivered", "records re-delivered from the journal after broker restarts"
        )
        redelivered.add_metric([], d.redelivered_total)
        fates = GaugeMetricFamily("flywheel_fates", "recorded fates by kind", labels=["fate"])
        for fate, n in d.fates.items():
            fates.add_metric([fate], n)
        return [epoch, unsettled, size, redelivered, fates]

    def _dlq(self):
        reasons = GaugeMetricFamily(
            "flywheel_dlq_records", "Records in the dead-letter topic by reason code", labels=["code"]
        )
        for code, n in sorted(self.dlq.read().items()):
            reasons.add_metric([code], n)
        yield reasons

    def _stream_job(self):
        health = job_health.read(self.settings.state_dir)
        running = GaugeMetricFamily(
            "flywheel_stream_job_running",
            "1 while the stream job runs: embedded (its report, not stale) or on this state dir's "
            "Flink cluster",
        )
        restarts = GaugeMetricFamily(
            "flywheel_stream_job_restarts", "Restarts of the stream job since it was submitted"
        )
        embedded = health is not None and health.state == "RUNNING" and not health.stale
        running.add_metric([], 1 if embedded or self._cluster_job_running() else 0)
        restarts.add_metric([], 0 if health is None else health.restarts)
        yield from (running, restarts)

    def _cluster_job_running(self) -> bool:
        """The job submitted to this state dir's Flink cluster runs (``flywheel stream submit``)."""

        cluster = flink_cluster.read(self.settings)
        if cluster is None or flink_cluster.overview(cluster, timeout_s=2) is None:
            return False
        name = job_name(self.settings)
        return any(j["name"] == name and j["state"] == "RUNNING" for j in flink_cluster.jobs(cluster))

    def _review(self):
        pending = GaugeMetricFamily(
            "flywheel_review_pending", "Review items waiting for a decision", labels=["model"]
        )
        escalated = GaugeMetricFamily(
            "flywheel_review_escalated", "Review items waiting for a lead", labels=["model"]
        )
        age = GaugeMetricFamily(
            "flywheel_review_oldest_pending_age_seconds",
            "How long the oldest pending item has waited",
            labels=["model"],
        )
        queue = ReviewQueue(self.settings)
        try:
            now = time.time()
            for model in queue.models():
                stats = queue.stats(model)
                pending.add_metric([model], stats.pending)
                escalated.add_metric([model], stats.escalated)
                oldest = queue.oldest_pending(model)
                age.add_metric([model], 0 if oldest is None else max(0.0, now - oldest))
        finally:
            queue.close()
        yield from (pending, escalated, age)

    def _models(self):
        store = ModelStore(self.settings.state_dir)
        champion = GaugeMetricFamily(
            "flywheel_champion_version", "The version serving as champion (0: none yet)", labels=["model"]
        )
        decisions = GaugeMetricFamily(
            "flywheel_decisions",
            "Decisions in the model's history by action (promote, reject, ...)",
            labels=["model", "action"],
        )
        live = GaugeMetricFamily(
            "flywheel_live_metric",
            "Each version's live metric on verified feedback",
            labels=["model", "version", "metric"],
        )
        labelled = GaugeMetricFamily(
            "flywheel_live_labelled",
            "Served predictions with verified feedback, per version",
            labels=["model", "version"],
        )
        try:
            ledger = LiveLedger.of(self.settings, readonly=True)
        except LedgerError:
            ledger = None
        try:
            for model in store.names():
                try:
                    state = store.state(model)
                except (FlywheelError, FileNotFoundError) as exc:  # a bootstrap under way or cut short
                    log.debug("metrics: %s has no state yet (%s)", model, exc)
                    continue
                champion.add_metric([model], state.champion or 0)
                for action, n in sorted(
                    Counter(e.action for e in history.entries(self.settings.state_dir, model)).items()
                ):
                    decisions.add_metric([model, action], n)
                if ledger is None:
                    continue
                metric = spec_class(store.info(model).task).live_metric
                for v in ledger.per_version(model):
                    live.add_metric([model, str(v.version), metric], v.mean)
                    labelled.add_metric([model, str(v.version)], v.n)
        finally:
            if ledger is not None:
                ledger.close()
        yield from (champion, decisions, live, labelled)


_registered: dict[str, StateCollector] = {}


def register_state(settings: Settings, registry=REGISTRY) -> StateCollector:
    """Add the state collector of ``settings`` to ``registry`` (once per state dir)."""
    key = f"{id(registry)}:{settings.state_dir}"
    if key not in _registered:
        _registered[key] = StateCollector(settings)
        registry.register(_registered[key])
    return _registered[key]


def serve_metrics(settings: Settings, log=print):
    """``flywheel run``'s metrics endpoint on ``run.metrics_host:run.metrics_port`` (off when
    the port is unset); a port in use is said, not fatal."""

    port = settings.run.metrics_port
    if port is None:
        return None
    register_state(settings)
    try:
        server, _thread = start_http_server(port, addr=settings.run.metrics_host)
    except OSError as exc:
        log(f"metrics: cannot listen on {settings.run.metrics_host}:{port} ({exc}); set run.metrics_port")
        return None
    log(f"metrics: http://{settings.run.metrics_host}:{port}/metrics")
    return server
