"""Reading topics back in tests (tansu's ListOffsets(latest) is unreliable, so we read
until the expected count arrives, then keep polling briefly to catch any extras)."""

from __future__ import annotations

import time
import uuid

from flywheel.kafka import client_config


def read_topic(settings, topic: str, expected: int, timeout_s: float = 60.0, settle_s: float = 1.5):
    from confluent_kafka import Consumer

    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": f"test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            },
        )
    )
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout_s
    settle_until = None
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    raise RuntimeError(msg.error())
                out.append(msg)
            if len(out) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
    finally:
        consumer.close()
    return out
