"""Reading a topic from where a reader left off (the review queue; the DLQ metrics).

The reader keeps, per partition, the offset and identity (the review queue: the event id)
of the last record it read. A topic that was recreated (the embedded broker keeps topics in
memory, so a broker restart empties it) no longer has that record at that offset: the
partition is read again from the start. Reading twice is harmless for the queue (one item
per event id); skipping is not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from flywheel.errors import BrokerError
from flywheel.kafka import client_config
from pipelines.records import RecordError, RoutedRecord


@dataclass
class NewRecords:
    values: list[bytes] = field(default_factory=list)
    marks: dict[int, tuple[int, str]] = field(default_factory=dict)  # partition → last (offset, event id)
    reset: set[int] = field(default_factory=set)  # partitions whose old mark no longer holds


def _event_id(value: bytes | None) -> str | None:
    try:
        return RoutedRecord.from_json(value or b"").event_id
    except RecordError:
        return None


def read_new(
    settings,
    topic: str,
    marks: dict[int, tuple[int, str]],
    timeout_s: float = 30.0,
    max_records: int = 5000,
    identity=None,
) -> NewRecords:
    """The records of ``topic`` after ``marks`` (partition → last offset read and its event
    id), up to the current end (read_committed), or the first ``max_records`` of them, or
    what ``timeout_s`` allowed: the marks cover exactly what is returned, so the next call
    goes on from there and a long backlog is read over several calls. ``identity(value)``
    names a record in the marks (default: a routed record's event id)."""
    identity = identity or _event_id

    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "flywheel-review-queue",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": settings.kafka.fetch_wait_ms,
            },
        )
    )
    deadline = time.monotonic() + timeout_s
    out = NewRecords()

    def messages(waiting: set[int], what: str, partial_ok: bool = False):
        while waiting and len(out.values) < max_records:
            if time.monotonic() > deadline:
                if partial_ok and out.values:
                    return  # progress: the marks cover what was read
                raise BrokerError(f"{what} {topic} did not finish within {timeout_s}s; is the broker up?")
            for msg in consumer.consume(500, 0.2):
                if len(out.values) >= max_records:
                    return  # the rest is read by the next call, from the marks
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise BrokerError(f"reading {topic}: {err.str()}")
                yield msg, err is not None

    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = set(metadata.topics[topic].partitions) if topic in metadata.topics else set()
        if not partitions or metadata.topics[topic].error is not None:
            raise BrokerError(f"topic {topic} does not exist yet; start the broker (`flywheel broker start`)")
        out.reset = set(marks) - partitions
        start = dict.fromkeys(partitions, OFFSET_BEGINNING)
        checking = {p: m for p, m in marks.items() if p in partitions}
        if checking:  # is the last item read still where it was?
            consumer.assign([TopicPartition(topic, p, offset) for p, (offset, _) in checking.items()])
            waiting = set(checking)
            for msg, eof in messages(waiting, "checking"):
                p = msg.partition()
                if p not in waiting:
                    continue
                waiting.discard(p)
                offset, event_id = checking[p]
                if not eof and msg.offset() == offset and identity(msg.value()) == event_id:
                    start[p] = offset + 1
                    out.marks[p] = checking[p]
                else:
                    out.reset.add(p)
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        waiting = set(partitions)
        for msg, eof in messages(waiting, "reading", partial_ok=True):
            if eof:
                waiting.discard(msg.partition())
                continue
            event_id = identity(msg.value())
            out.values.append(msg.value())
            if event_id is not None:
                out.marks[msg.partition()] = (msg.offset(), event_id)
        return out
    finally:
        consumer.close()
