"""What both demos share: settings on embedded defaults in a state dir of their own, a fresh
start, and a bounded wait."""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def embedded_settings(state: Path, training: dict, **more):
    """The embedded stack (free broker and HTTP ports, 1 s checkpoints, 0.5 s ingest batches,
    the served champion re-read every second) in ``state``; ``more``: other sections."""
    from flywheel.broker import free_port
    from flywheel.settings import load_settings

    return load_settings(
        state_dir=state,
        broker={"port": free_port()},
        http={"port": free_port()},
        stream={"checkpoint_interval_ms": 1000},
        feast={"ingest_batch_ms": 500},
        serving={"refresh_s": 1.0},
        training=training,
        **more,
    )


def fresh_start(console, state: Path) -> None:
    """Remove a previous run's state, saying so."""
    if state.exists():
        console.print(f"[dim]removing the previous demo state {state}[/dim]")
        shutil.rmtree(state)


def wait_for(predicate, timeout_s: float, what: str, state: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise TimeoutError(f"demo: {what} did not happen within {timeout_s:.0f}s (see {state}/run/logs)")


def send(settings, events: list, raw: list[bytes]) -> int:
    """A round's validated events and raw bytes (a buggy producer's malformed or resent
    events, unvalidated: the stream job sends them to the DLQ or the duplicates) to the raw
    topic, every one confirmed by the broker; returns the events accepted."""
    from pipelines.sdk import FeedbackClient

    with FeedbackClient(settings) as client:
        result = client.submit_many(events)
        sent = client.send_raw(raw)
    if sent.failed or result.failed:
        raise RuntimeError("the broker did not confirm all of the demo's events")
    return len(result.accepted)
