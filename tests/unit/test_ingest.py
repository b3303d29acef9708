"""Pure parts of the Feast ingestor: record → row, batch names."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from feature_repo.definitions import CREATED, FEATURES, JOIN_KEY, SUBJECT, TIMESTAMP
from flywheel.events import validate_event
from pipelines.ingest import IngestError, batch_name, sample_row
from pipelines.records import Origin, RoutedRecord
from tests.helpers import make_event

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_a_routed_record_becomes_a_row_with_every_feature():
    event = validate_event(make_event(3, feedback={"accepted": True}))
    row = sample_row(RoutedRecord.of(event, True, 2, Origin("t.raw", 1, 9)).to_json().encode(), NOW)
    assert set(row) == {JOIN_KEY, TIMESTAMP, CREATED, SUBJECT, *FEATURES}
    assert row[JOIN_KEY] == "evt-000003"
    assert row[TIMESTAMP] == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert row["label"] == "positive"  # an accepted prediction is a verified label
    assert (row["pred_label"], row["confidence"], row["low_confidence"], row["pii_masks"]) == (
        "positive",
        0.9,
        True,
        2,
    )


def test_an_unlabelled_record_has_no_label():
    event = validate_event(make_event(4, feedback=None))
    row = sample_row(RoutedRecord.of(event, False, 0, Origin("t.raw", 0, 1)).to_json().encode(), NOW)
    assert row["label"] is None


@pytest.mark.parametrize("value", [b"not json", b"{}", json.dumps({"event": {"event_id": "x"}}).encode()])
def test_a_record_that_is_not_a_routed_event_is_a_clear_error(value):
    with pytest.raises(IngestError, match="restart `flywheel ingest`"):
        sample_row(value, NOW)


def test_batch_names_are_stable_and_distinct():
    assert batch_name({0: (1, 5), 1: (2, 3)}) == batch_name({1: (2, 3), 0: (1, 5)})
    assert batch_name({0: (1, 5)}) != batch_name({0: (1, 6)})
