"""The one producer behind every acknowledgement: journal first, then Kafka, and it heals.

``DurableProducer.deliver(entries)`` appends the entries to this process's edge journal
(``flywheel.journal``, fsync'd), produces them, and waits until Kafka confirmed or failed
each one. Its caller acknowledges only what was both journaled and confirmed; a failed one
is voided in the journal (never acknowledged, so nobody waits for its fate).

librdkafka's idempotent producer does not survive a broker that came back empty (the
embedded broker forgets its producer ids): it stays stuck timing out until the process
restarts. So the producer is rebuilt, not waited on, when librdkafka reports a fatal
error, when a batch's deliveries all failed, or when the embedded broker's epoch changed
(``flywheel.broker``). ``health`` says whether the last delivery worked, for ``/healthz``
and ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, Producer

from flywheel.broker import read_epoch
from flywheel.journal import Entry, JournalWriter
from flywheel.kafka import producer_config
from flywheel.layout import StateLayout

if TYPE_CHECKING:
    from flywheel.settings import Settings

log = logging.getLogger("flywheel.producer")


@dataclass
class DeliveryHealth:
    """How this process's deliveries are going; read by ``/healthz``."""

    ok_at: float | None = None
    failed_at: float | None = None
    last_error: str | None = None
    rebuilds: int = 0
    delivered: int = 0
    failed: int = 0

    @property
    def degraded(self) -> bool:
        """The latest delivery attempt failed (and none succeeded after it)."""
        return self.failed_at is not None and (self.ok_at is None or self.failed_at > self.ok_at)


_journals: dict[str, JournalWriter] = {}
_journals_lock = threading.Lock()


def journal_for(settings: Settings) -> JournalWriter | None:
    """This process's journal writer under the settings' state dir (one per process and
    folder, shared by every producer in it); None when ``journal.enabled`` is off."""

    if not settings.journal.enabled:
        return None
    root = StateLayout.of(settings).journal
    key = str(root.resolve())
    with _journals_lock:
        writer = _journals.get(key)
        if writer is None:
            writer = _journals[key] = JournalWriter(root, settings.journal.max_bytes, settings.journal.fsync)
        return writer


class DurableProducer:
    """Journal, produce, confirm; rebuilt when librdkafka cannot recover by itself. Thread-safe."""

    def __init__(self, settings: Settings, journal: JournalWriter | None = None, **overrides: Any):
        self.settings = settings
        self.journal = journal if journal is not None else journal_for(settings)
        self.overrides = overrides
        self.health = DeliveryHealth()
        self._lock = threading.Lock()
        self._fatal = threading.Event()
        self._epoch = self._broker_epoch()
        self._producer = self._new()

    # ---- the librdkafka producer and its replacement ------------------------------------

    def _new(self):

        def on_error(err) -> None:
            if err.fatal():
                self._fatal.set()

        return Producer(producer_config(self.settings, error_cb=on_error, **self.overrides))

    def _broker_epoch(self) -> str | None:
        if not self.settings.embedded_broker:
            return None

        epoch = read_epoch(self.settings.state_dir)
        return epoch.id if epoch is not None else None

    def _current(self):
        """The producer to use now, rebuilt first if it cannot recover by itself."""
        with self._lock:
            epoch = self._broker_epoch()
            reason = None
            if self._fatal.is_set():
                reason = "librdkafka reported a fatal error"
            elif epoch != self._epoch:
                reason = "the embedded broker restarted"
            if reason is not None:
                self._rebuild(reason)
                self._epoch = epoch
            return self._producer

    def _rebuild(self, reason: str) -> None:
        old = self._producer
        self._producer = self._new()
        self._fatal.clear()
        self.health.rebuilds += 1
        log.warning("Kafka producer rebuilt (%s)", reason)
        old.purge(in_queue=True, in_flight=False)  # its callers time out on their own deadline

    def rebuild_if_same(self, producer, reason: str) -> None:
        with self._lock:
            if self._producer is producer:
                self._rebuild(reason)

    # ---- delivering -------------------------------------------------------------------

    def deliver(
        self, entries: list[Entry], on_progress: Callable[[int], None] | None = None
    ) -> list[str | None]:
        """Journal ``entries``, produce them and wait; per entry None (confirmed) or the error.
        Raises ``SpoolFull`` / ``JournalWriteError`` before producing anything."""
        if not entries:
            return []
        if self.journal is not None:
            self.journal.append(entries)
        producer = self._current()
        outcomes: dict[int, str | None] = {}
        done = threading.Event()
        lock = threading.Lock()

        def delivered(index: int):
            def callback(err: Any, _msg: Any) -> None:
                with lock:
                    outcomes[index] = None if err is None else str(err)
                    if len(outcomes) == len(entries):
                        done.set()
                if on_progress:
                    on_progress(1)

            return callback

        try:
            for index, entry in enumerate(entries):
                while True:
                    try:
                        producer.produce(
                            entry.topic, key=entry.key, value=entry.value, on_delivery=delivered(index)
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)  # local queue full: let deliveries drain, then retry
            # librdkafka fails every message by message.timeout.ms; the margin guards a lost callback
            deadline = time.monotonic() + self.settings.kafka.delivery_timeout_s + 10
            while not done.is_set() and time.monotonic() < deadline:
                producer.poll(0.05)
                if self._fatal.is_set():
                    break
        except KafkaException as exc:
            # librdkafka may raise a fatal error from produce() or poll() themselves (seen after a
            # broker SIGKILL: UNKNOWN_PRODUCER_ID): what has no report yet failed; rebuild below
            with lock:
                for i in range(len(entries)):
                    outcomes.setdefault(i, f"producer failed: {exc.args[0] if exc.args else exc}")
            self._fatal.set()
        results = [
            outcomes.get(i, "no delivery report before the delivery timeout") for i in range(len(entries))
        ]
        failed = [e for e, r in zip(entries, results, strict=True) if r is not None]
        now = time.time()
        self.health.delivered += len(entries) - len(failed)
        self.health.failed += len(failed)
        if failed:
            self.health.failed_at, self.health.last_error = now, next(r for r in results if r)
            if self.journal is not None:
                self.journal.void(failed)
            if len(failed) == len(entries) or self._fatal.is_set():
                self.rebuild_if_same(producer, f"a batch failed: {self.health.last_error}")
        else:
            self.health.ok_at = now
        return results

    def flush(self, timeout_s: float) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> int:
        return self._producer.flush(
            self.settings.kafka.delivery_timeout_s if timeout_s is None else timeout_s
        )
