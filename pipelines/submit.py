"""Submit a JSONL file of feedback events, reporting bad lines by line number."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from flywheel.errors import InvalidEventError
from flywheel.events import FeedbackEvent, parse_event
from pipelines.sdk import FeedbackClient

BATCH = 1000


@dataclass
class LineProblem:
    line: int
    event_id: str | None
    reason: str


@dataclass
class FileReport:
    sent: int = 0
    rejected: list[LineProblem] = field(default_factory=list)
    failed: list[LineProblem] = field(default_factory=list)
    seconds: float = 0.0


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of non-blank lines; ``-`` reads standard input."""
    stream: IO[bytes] = sys.stdin.buffer if str(path) == "-" else open(path, "rb")  # noqa: SIM115
    try:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def submit_file(
    client: FeedbackClient,
    path: str | Path,
    on_progress: Callable[[int], None] | None = None,
    raw: bool = False,
) -> FileReport:
    """Validate and send each line (bad lines reported by number), or with ``raw`` send the
    lines unvalidated so the stream job's DLQ records what was wrong with them."""
    if raw:
        return _submit_raw(client, path, on_progress)
    report = FileReport()
    start = time.perf_counter()
    batch: list[tuple[int, FeedbackEvent]] = []

    def send() -> None:
        result = client.submit_many([e for _, e in batch], on_progress=on_progress)
        report.sent += len(result.accepted)
        for failed in result.failed:
            report.failed.append(LineProblem(batch[failed.index][0], failed.event_id, failed.error))
        batch.clear()

    for number, raw in iter_lines(path):
        try:
            batch.append((number, parse_event(raw)))
        except InvalidEventError as exc:
            report.rejected.append(LineProblem(number, None, f"{exc.code}: {exc}"))
            if on_progress:
                on_progress(1)
            continue
        if len(batch) >= BATCH:
            send()
    if batch:
        send()
    report.seconds = time.perf_counter() - start
    return report


def _submit_raw(client: FeedbackClient, path: str | Path, on_progress) -> FileReport:
    report = FileReport()
    start = time.perf_counter()
    lines = list(iter_lines(path))
    for i in range(0, len(lines), BATCH):
        chunk = lines[i : i + BATCH]
        result = client.send_raw([value for _, value in chunk], on_progress=on_progress)
        report.sent += len(result.accepted)
        for failed in result.failed:
            report.failed.append(LineProblem(chunk[failed.index][0], failed.event_id, failed.error))
    report.seconds = time.perf_counter() - start
    return report


def count_lines(path: str | Path) -> int | None:
    if str(path) == "-":
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
