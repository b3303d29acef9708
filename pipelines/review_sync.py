"""Keeping the review queue in step with the review topic: one process at a time reads
the records it has not seen (``pipelines.topic_reader``) and queues them with the marks of
where it stopped (``ReviewQueue.add_synced``), under the queue's worker lock."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from flywheel.kafka import Topics
from flywheel.locks import file_lock, tried
from pipelines.records import RecordError, RoutedRecord
from pipelines.review_queue import ReviewQueue
from pipelines.topic_reader import read_new


@contextmanager
def exclusive(queue: ReviewQueue, wait: bool = False) -> Iterator[bool]:
    """Hold the queue's worker lock (one process at a time syncs and sends); yields False
    when another holds it and ``wait`` is False."""
    path = queue.path.with_suffix(".worker.lock")
    if wait:
        with file_lock(path, timeout_s=None):
            yield True
    else:
        with tried(path) as mine:
            yield mine


def sync(queue: ReviewQueue, timeout_s: float = 30.0, wait: bool = False, max_records: int = 5000) -> int:
    """Copy the review topic's new records into the queue; return how many were new.
    Another process syncing at the same time makes this call a no-op (returns 0) unless
    ``wait``."""
    with exclusive(queue, wait) as mine:
        return _sync(queue, timeout_s, max_records) if mine else 0


def _sync(queue: ReviewQueue, timeout_s: float, max_records: int) -> int:
    topic = Topics.from_settings(queue.settings).review
    batch = read_new(queue.settings, topic, queue.sync_marks(topic), timeout_s, max_records)
    records, bad = [], 0
    for value in batch.values:
        try:
            records.append(RoutedRecord.from_json(value))
        except RecordError:
            bad += 1  # the stream job wrote it, so this is a bug; counted, never fatal
    added = queue.add_synced(topic, records, batch.marks, list(batch.reset))
    if bad:
        logging.getLogger("flywheel.review").warning(
            "%d review-topic record(s) are not routed records and were left out", bad
        )
    return added
