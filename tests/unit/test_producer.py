"""DurableProducer's recovery logic, with stand-in librdkafka producers (pure logic)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from flywheel.journal import Entry
from flywheel.producer import DurableProducer
from flywheel.settings import load_settings


class Raising:
    """A producer whose poll raises a fatal error, as librdkafka did after a broker SIGKILL."""

    def produce(self, topic, key, value, on_delivery):
        pass

    def poll(self, timeout):
        raise KafkaException(KafkaError(KafkaError._FATAL, "unknown producer id", fatal=True))

    def purge(self, in_queue, in_flight):
        pass


class Working:
    def __init__(self):
        self.pending = []

    def produce(self, topic, key, value, on_delivery):
        self.pending.append(on_delivery)

    def poll(self, timeout):
        while self.pending:
            self.pending.pop()(None, None)

    def purge(self, in_queue, in_flight):
        pass


def test_a_fatal_error_raised_from_poll_fails_the_batch_and_the_next_batch_gets_a_new_producer(
    tmp_path, monkeypatch
):
    settings = load_settings(state_dir=tmp_path, journal={"enabled": False}, kafka={"delivery_timeout_s": 1})
    made = iter([Raising(), Working()])
    monkeypatch.setattr(DurableProducer, "_new", lambda self: next(made))
    producer = DurableProducer(settings)
    entries = [Entry("t", None, b"x", f"e{i}") for i in range(3)]
    first = producer.deliver(entries)
    assert all(r and "unknown producer id" in r for r in first)  # told, not raised: the caller answers 503
    assert producer.health.failed == 3 and producer.health.rebuilds == 1
    assert producer.deliver(entries) == [None, None, None]  # the rebuilt producer delivers
    assert producer.health.delivered == 3
