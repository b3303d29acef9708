"""Event accounting: raw = clean + review + dlq + duplicates.

Topics are counted by reading them (read_committed) to the end of every partition,
not from offsets: transactional topics hold commit markers that take offsets, and
tansu's ListOffsets(latest) is unreliable for multi-record batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flywheel.errors import BrokerError
from flywheel.kafka import Topics, client_config


def read_topic(settings, topic: str, timeout_s: float = 60.0) -> list:
    """Every committed message of ``topic``, read from the beginning to the current end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "flywheel-stats",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
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


@dataclass
class Accounting:
    raw: int
    clean: int
    review: int
    dlq: int
    duplicates: int

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


def accounting(settings) -> Accounting:
    # Topics.all() is raw, clean, review, dlq, duplicates: the order of Accounting's fields.
    return Accounting(*(len(read_topic(settings, t)) for t in Topics.from_settings(settings).all()))
