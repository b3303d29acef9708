"""Putting labelled feedback into Feast the way production does: clean topic → ingestor."""

from __future__ import annotations

from flywheel.events import validate_event
from flywheel.kafka import Topics
from pipelines.ingest import Ingestor
from pipelines.records import Origin, RoutedRecord
from tests.helpers import make_event
from tests.integration.kafka_utils import produce_raw


def feed_labelled(
    settings, store, frame, model: str = "sentiment", prefix: str = "fb", ids: list[str] | None = None
) -> int:
    """Send rows (text, label) of ``frame`` as labelled feedback for ``model`` (event ids
    ``<prefix>-<i>``, or ``ids``); return rows ingested."""
    records = []
    for i, row in enumerate(frame.itertuples()):
        event = validate_event(
            make_event(
                i,
                event_id=ids[i] if ids is not None else f"{prefix}-{i}",
                model_name=model,
                input={"text": row.text},
                feedback={"label": row.label},
            )
        )
        records.append(RoutedRecord.of(event, False, 0, Origin("raw", 0, i)).to_json().encode())
    produce_raw(settings, records, topic=Topics.from_settings(settings).clean)
    return Ingestor(settings, store).run(until_caught_up=True).rows
