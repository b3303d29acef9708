"""Event accounting: raw = clean + review + dlq + duplicates.

Topics are counted by reading them (read_committed) to the end of every partition,
not from offsets: transactional topics hold commit markers that take offsets, and
tansu's ListOffsets(latest) is unreliable for multi-record batches.

Every output record names the raw record it came from (``origin``: partition and
offset), and an output topic is counted by distinct origin. Against Apache Kafka the
job's exactly-once sinks never write a record twice; against the embedded tansu 0.6.0
they can after a crash, because tansu *commits* the transaction a restarted producer
fences instead of aborting it, so the records written after the last checkpoint are
visible and then written again by the replay. Such re-deliveries are reported as
``redelivered`` and are harmless downstream: the Feast ingestor upserts by sample_id
and reads offline rows deduplicated, and the review queue is keyed by event_id.

``wait_until_balanced`` waits for the stream job to catch up (every raw record in an
output topic), with a TimeoutError that says what did not happen and where to look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from flywheel.errors import BrokerError
from flywheel.kafka import Topics, client_config
from flywheel.layout import StateLayout
from pipelines import records

if TYPE_CHECKING:
    from flywheel.settings import Settings


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 60.0, isolation: str = "read_committed"
) -> list:
    """Every committed message of ``topic``, read from the beginning to the current end
    (``isolation="read_uncommitted"``: also those of open or aborted transactions, to diagnose)."""

    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "flywheel-stats",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": isolation,
            },
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        if not partitions:
            raise BrokerError(f"topic {topic} does not exist; run `flywheel broker start` to create it")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        done: set[int] = set()
        out = []
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} did not reach the end within {timeout_s}s")
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                else:
                    raise BrokerError(f"reading {topic}: {err.str()}")
        return out
    finally:
        consumer.close()


def origin_of(message) -> tuple[int, int]:
    """(partition, offset) of the raw record an output record came from."""
    origin = records.origin_of(message.value())
    return origin.partition, origin.offset


@dataclass
class Accounting:
    raw: int
    clean: int
    review: int
    dlq: int
    duplicates: int
    redelivered: int = 0  # output records whose origin was already counted (see module doc)

    @property
    def accounted(self) -> int:
        return self.clean + self.review + self.dlq + self.duplicates

    @property
    def balanced(self) -> bool:
        return self.raw == self.accounted

    @property
    def in_flight(self) -> int:
        """Events in raw not yet in an output (the job lags, or is not running)."""
        return self.raw - self.accounted


def accounting(settings: Settings) -> Accounting:
    topics = Topics.from_settings(settings)
    counts = {"raw": len(read_topic(settings, topics.raw))}
    redelivered = 0
    for name in ("clean", "review", "dlq", "duplicates"):
        messages = read_topic(settings, getattr(topics, name))
        counts[name] = len({origin_of(m) for m in messages})
        redelivered += len(messages) - counts[name]
    return Accounting(**counts, redelivered=redelivered)


def settle(
    read: Callable[[], Accounting],
    timeout_s: float,
    poll_s: float = 1.0,
    where: str = "the stream job",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Accounting:
    """``read()`` until the accounting balances; return it (the core of wait_until_balanced).

    TimeoutError after ``timeout_s`` saying what did not happen, the last counts, and
    ``where`` to look.
    """
    deadline = clock() + timeout_s
    while True:
        a = read()
        if a.balanced:
            return a
        if clock() >= deadline:
            raise TimeoutError(
                f"the stream did not catch up within {timeout_s:.0f}s: raw has {a.raw:,} records but "
                f"clean + review + dlq + duplicates hold {a.accounted:,} ({a.in_flight:+,} in flight). "
                f"Is `flywheel stream run` running? See `flywheel status` and {where}"
            )
        sleep(max(0.0, min(poll_s, deadline - clock())))


def wait_until_balanced(settings: Settings, timeout_s: float, poll_s: float = 1.0) -> Accounting:
    """Wait until every raw record is in an output topic (the stream job caught up); return
    the accounting. TimeoutError if that did not happen within ``timeout_s``."""
    layout = StateLayout.of(settings)
    where = (
        f"the job's health in {layout.stream_job_health} and its logs under {layout.flink_logs} "
        f"(and {layout.logs} when supervised)"
    )
    return settle(lambda: accounting(settings), timeout_s, poll_s, where)
