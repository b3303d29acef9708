"""Where each consumer of the loop's topics stands: every partition's end offset and each
consumer group's committed offset, for ``flywheel status`` and ``/metrics``.

End offsets come from fetch responses' high watermarks, not ListOffsets: the embedded tansu
answers ListOffsets(latest) wrongly for multi-record batches. The consumers are the stream
job (``stream.group_id`` on ``raw``) and the ingestor (``feast.group_id`` on ``clean``,
``predictions``, ``review``, ``dlq`` and ``duplicates``); on the embedded broker their groups
are per epoch (``flywheel.kafka.group_id``), so a restarted broker starts every lag afresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from flywheel.kafka import Topics, client_config, group_id

if TYPE_CHECKING:
    from flywheel.settings import Settings


@dataclass(frozen=True)
class ConsumerLag:
    """One consumer on one topic: records it has not committed past (summed over partitions).
    On the stream job's transactional outputs a caught-up reader still shows the trailing
    commit markers, about one per partition."""

    consumer: str  # "stream job" or "ingestor"
    group: str
    topic: str  # the short name: raw, clean, ...
    end: int
    committed: int
    behind: int


def end_offsets(consumer, parts, timeout_s: float = 5.0) -> dict[str, dict[int, int]]:
    """Each partition's end offset (high watermark) as a fetch answers it."""

    if not parts:
        return {}
    consumer.assign(parts)
    deadline = time.monotonic() + timeout_s
    while True:
        consumer.consume(len(parts), 0.1)
        ends: dict[str, dict[int, int]] = {}
        for tp in parts:
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)[1]
            if high >= 0:
                ends.setdefault(tp.topic, {})[tp.partition] = high
        if sum(len(v) for v in ends.values()) == len(parts):
            return ends
        if time.monotonic() > deadline:
            missing = len(parts) - sum(len(v) for v in ends.values())
            raise TimeoutError(f"no high watermark for {missing} partition(s) within {timeout_s}s")


def topic_ends(settings: Settings, timeout_s: float = 5.0) -> dict[str, dict[int, int]]:
    """Every partition's end offset of the loop's topics that exist: topic → partition → end."""

    topics = Topics.from_settings(settings)
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "flywheel-metrics",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "max.partition.fetch.bytes": 1024,  # a fetch is for its high watermark, not data
                "fetch.wait.max.ms": settings.kafka.fetch_wait_ms,
                "log_level": 2,  # a probe: connection errors become the caller's one-line answer
            },
        )
    )
    try:
        metadata = consumer.list_topics(timeout=3)
        parts = [
            TopicPartition(topic, p, 0)
            for topic in topics.all()
            if topic in metadata.topics
            for p in metadata.topics[topic].partitions
        ]
        return end_offsets(consumer, parts, timeout_s)
    finally:
        consumer.close()


def consumers(settings: Settings) -> list[tuple[str, str, str]]:
    """(consumer, group, topic) for every group that reads the loop's topics."""
    topics = Topics.from_settings(settings)
    stream = group_id(settings, settings.stream.group_id)
    ingest = group_id(settings, settings.feast.group_id)
    return [("stream job", stream, topics.raw)] + [
        ("ingestor", ingest, t)
        for t in (topics.clean, topics.predictions, topics.review, topics.dlq, topics.duplicates)
    ]


def consumer_lags(settings: Settings, ends: dict[str, dict[int, int]] | None = None) -> list[ConsumerLag]:
    """Each consumer's lag on each of its topics (``ends``: from ``topic_ends``, read if omitted)."""

    ends = topic_ends(settings) if ends is None else ends
    admin = AdminClient(client_config(settings))
    out = []
    for name, group, topic in consumers(settings):
        parts = ends.get(topic, {})
        if not parts:  # the topic does not exist (yet): nothing to be behind on
            out.append(ConsumerLag(name, group, topic.rsplit(".", 1)[-1], 0, 0, 0))
            continue
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
        (future,) = admin.list_consumer_group_offsets([request], request_timeout=5).values()
        committed = {tp.partition: tp.offset for tp in future.result().topic_partitions}
        end, done = summed(parts, committed)
        out.append(ConsumerLag(name, group, topic.rsplit(".", 1)[-1], end, done, end - done))
    return out


def summed(ends: dict[int, int], committed: dict[int, int]) -> tuple[int, int]:
    """(end, committed) summed over a topic's partitions. A partition without a commit (none,
    or librdkafka's negative "invalid offset") counts from 0; a commit past the end (the
    partition was recreated emptier) counts as the end, never as negative lag."""
    end = sum(ends.values())
    done = sum(min(max(committed.get(p, 0), 0), e) for p, e in ends.items())
    return end, done
