"""The human review queue: low-confidence unlabelled predictions waiting for a label.

``pending`` lists review-topic items (routed records) not yet labelled; ``label`` sends the reviewer's
answer back into ``feedback.raw`` as a new event (``review_event_id``: ``<event_id>.review``,
``label_source=review``, the reviewed prediction's ``prediction_id`` when it was served by
``/v1/predict``) and records the decision
in a ledger (``<state_dir>/review/labelled.jsonl``), so an item is labelled once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.events import MAX_ID_CHARS, feedback_event
from flywheel.kafka import Topics
from flywheel.layout import StateLayout
from flywheel.model_info import read_model_info
from pipelines.records import RoutedRecord

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


def ledger_path(settings) -> Path:
    return StateLayout.of(settings).review_ledger


def check_labels(settings, items_and_labels: list[tuple[RoutedRecord, str]]) -> None:
    """Refuse an answer outside its model's label set (it would only be quarantined later)."""
    known: dict[str, list[str]] = {}
    for item, answer in items_and_labels:
        if item.model_name not in known:
            known[item.model_name] = read_model_info(settings.state_dir, item.model_name).labels
        labels = known[item.model_name]
        if answer not in labels:
            raise FlywheelError(
                f"label {answer[:80]!r} for {item.event_id} is not one of model {item.model_name!r}'s "
                f"labels {labels}; answer with one of them"
            )


def labelled_ids(settings) -> set[str]:
    path = ledger_path(settings)
    if not path.is_file():
        return set()
    return {json.loads(line)["event_id"] for line in path.read_text().splitlines() if line.strip()}


def pending(settings, limit: int | None = None, model: str | None = None) -> list[RoutedRecord]:
    """Items of the review topic without a label yet, oldest first (one per event_id)."""
    from pipelines.stats import read_topic

    done = labelled_ids(settings)
    items: dict[str, RoutedRecord] = {}
    for message in read_topic(settings, Topics.from_settings(settings).review):
        item = RoutedRecord.from_json(message.value())
        if item.event_id in done or item.event_id in items:
            continue
        if model is None or item.model_name == model:
            items[item.event_id] = item
    out = list(items.values())
    return out[:limit] if limit else out


def review_event(item: RoutedRecord, answer: str, reviewer: str) -> dict:
    """The reviewer's answer to ``item`` as a feedback event (``label_source=review``)."""
    return feedback_event(
        review_event_id(item.event_id),
        item.model_name,
        item.task,
        text=item.text,
        image_png_b64=item.image_png_b64,
        prediction=item.prediction,
        feedback={"label": answer},
        label_source="review",
        source=f"review:{reviewer}"[:64],
        model_version=item.model_version,
        prediction_id=item.prediction_id,  # the served prediction reviewed, if it was one
    )


def label(
    settings, client, items_and_labels: list[tuple[RoutedRecord, str]], reviewer: str = "reviewer"
) -> int:
    """Send reviewers' labels as feedback events; return how many were accepted by Kafka."""
    check_labels(settings, items_and_labels)
    events = [review_event(item, answer, reviewer) for item, answer in items_and_labels]
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
