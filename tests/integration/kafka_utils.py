"""Producing and reading topics in tests."""

from __future__ import annotations

import json

from flywheel.kafka import Topics, producer_config
from pipelines.stats import read_topic

__all__ = ["produce_raw", "read_topic"]


def key_of(value: bytes, index: int) -> bytes:
    """The event_id, as the SDK keys events (so copies of an event share a partition); else the index."""
    try:
        return json.loads(value)["event_id"].encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(index).encode()


def produce_raw(settings, values: list[bytes], topic: str | None = None) -> dict[int, int]:
    """Produce values (key = index) to <prefix>.raw (or ``topic``); return end offsets per partition."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings))
    ends: dict[int, int] = {}
    errors: list = []

    def done(err, msg):
        if err:
            errors.append(err)
        else:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)

    topic = topic or Topics.from_settings(settings).raw
    for i, value in enumerate(values):
        producer.produce(topic, key=key_of(value, i), value=value, on_delivery=done)
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors
    return ends
