"""The human review queue: low-confidence unlabelled predictions waiting for a label.

``pending`` lists review-topic items not yet labelled; ``label`` sends the reviewer's
answer back into ``feedback.raw`` as a new event (``review_event_id``: ``<event_id>.review``,
``label_source=review``, ``prediction_id`` = the reviewed event) and records the decision
in a ledger (``<state_dir>/review/labelled.jsonl``), so an item is labelled once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.events import MAX_ID_CHARS
from flywheel.kafka import Topics

REVIEW_SUFFIX = ".review"


def review_event_id(event_id: str) -> str:
    """The id of the reviewer's answer to ``event_id``: ``<event_id>.review`` when it fits,
    else a prefix of the id plus a hash of the whole id, so two long ids never collide."""
    plain = event_id + REVIEW_SUFFIX
    if len(plain) <= MAX_ID_CHARS:
        return plain
    digest = hashlib.sha256(event_id.encode("utf-8")).hexdigest()[:32]
    tail = f"{REVIEW_SUFFIX}.{digest}"
    return event_id[: MAX_ID_CHARS - len(tail)] + tail


@dataclass
class ReviewItem:
    event: dict
    pii_masks: int

    @property
    def event_id(self) -> str:
        return self.event["event_id"]


def ledger_path(settings) -> Path:
    return Path(settings.state_dir) / "review" / "labelled.jsonl"


def labelled_ids(settings) -> set[str]:
    path = ledger_path(settings)
    if not path.is_file():
        return set()
    return {json.loads(line)["event_id"] for line in path.read_text().splitlines() if line.strip()}


def pending(settings, limit: int | None = None, model: str | None = None) -> list[ReviewItem]:
    """Items of the review topic without a label yet, oldest first (one per event_id)."""
    from pipelines.stats import read_topic

    done = labelled_ids(settings)
    items: dict[str, ReviewItem] = {}
    for message in read_topic(settings, Topics.from_settings(settings).review):
        record = json.loads(message.value())
        event = record["event"]
        if event["event_id"] in done or event["event_id"] in items:
            continue
        if model is None or event["model_name"] == model:
            items[event["event_id"]] = ReviewItem(event, record.get("pii_masks", 0))
    out = list(items.values())
    return out[:limit] if limit else out


def label(
    settings, client, items_and_labels: list[tuple[ReviewItem, str]], reviewer: str = "reviewer"
) -> int:
    """Send reviewers' labels as feedback events; return how many were accepted by Kafka."""
    events = []
    for item, answer in items_and_labels:
        e = item.event
        events.append(
            {
                "schema_version": 1,
                "event_id": review_event_id(e["event_id"]),
                "event_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "source": f"review:{reviewer}"[:64],
                "model_name": e["model_name"],
                "model_version": e.get("model_version"),
                "task": e["task"],
                "input": e["input"],
                "prediction": e.get("prediction"),
                "feedback": {"label": answer},
                "label_source": "review",
                "prediction_id": e["event_id"],
            }
        )
    result = client.submit_many(events)
    if result.rejected:
        first = result.rejected[0]
        raise FlywheelError(
            f"a review label was rejected: {first}; check the label against the model's labels"
        )
    accepted = set(result.accepted)
    path = ledger_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for (item, answer), event in zip(items_and_labels, events, strict=True):
            if event["event_id"] in accepted:
                f.write(
                    json.dumps(
                        {
                            "event_id": item.event_id,
                            "label": answer,
                            "reviewer": reviewer,
                            "time": event["event_time"],
                        }
                    )
                    + "\n"
                )
        f.flush()
        os.fsync(f.fileno())
    return len(accepted)
