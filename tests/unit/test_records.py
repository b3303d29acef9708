"""Per-record logic of the stream job: masking, normalising, routing, DLQ records."""

from __future__ import annotations

import base64
import json

import pytest

from flywheel.events import validate_event
from pipelines.records import (
    CLEAN,
    REVIEW,
    Origin,
    mask_pii,
    normalise_text,
    process_raw,
    route,
    route_valid,
)
from tests.helpers import make_event

ORIGIN = Origin("feedback.raw", 2, 41)


@pytest.mark.parametrize(
    ("text", "expected", "count"),
    [
        ("mail jane.doe+x@mail.example.co.uk now", "mail [EMAIL] now", 1),
        ("card 4111 1111 1111 1111 thanks", "card [CARD] thanks", 1),
        ("card 4111-1111-1111-1112 fails luhn", "card [CARD] fails luhn", 1),
        ("from 192.168.10.254 and 2001:db8:0:0:1:0:0:1", "from [IP] and [IP]", 2),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]", 2),
        ("order 12345 arrived in 2 days, rated 4.5", "order 12345 arrived in 2 days, rated 4.5", 0),
        ("version 1.2.3 is fine", "version 1.2.3 is fine", 0),
    ],
)
def test_mask_pii(text, expected, count):
    assert mask_pii(text) == (expected, count)


def test_normalise_text():
    fullwidth = "\uff46\uff55\uff4c\uff4c"  # "full" in fullwidth letters
    assert normalise_text(f"  {fullwidth}\u00a0width\t\n text  ") == "full width text"


def test_route_rules():
    low_unlabelled = validate_event(make_event(prediction={"label": "a", "confidence": 0.2}, feedback=None))
    low_labelled = validate_event(make_event(prediction={"label": "a", "confidence": 0.2}))
    high_unlabelled = validate_event(make_event(prediction={"label": "a", "confidence": 0.8}, feedback=None))
    accepted = validate_event(
        make_event(prediction={"label": "a", "confidence": 0.2}, feedback={"accepted": True})
    )
    assert route(low_unlabelled, 0.5) == (REVIEW, True)
    assert route(low_labelled, 0.5) == (CLEAN, True)
    assert route(high_unlabelled, 0.5) == (CLEAN, False)
    assert route(accepted, 0.5) == (CLEAN, True)
    assert route(high_unlabelled, 0.9) == (REVIEW, True)  # per-model threshold


def test_valid_event_is_masked_and_routed_with_origin():
    raw = json.dumps(
        make_event(
            7,
            input={"text": "mail me:  a@b.io "},
            feedback=None,
            prediction={"label": "neg", "confidence": 0.1},
        )
    ).encode()
    kind, payload, event_id = process_raw(raw, b"evt-000007", ORIGIN)
    assert (kind, event_id) == ("valid", "evt-000007")
    dest, routed = route_valid(payload, {"sentiment": 0.05}, 0.5)
    assert dest == CLEAN  # the per-model threshold 0.05 applies, not the default 0.5
    dest, routed = route_valid(payload, {}, 0.5)
    record = json.loads(routed)
    assert dest == REVIEW
    assert record["event"]["input"]["text"] == "mail me: [EMAIL]"
    assert record["pii_masks"] == 1 and record["low_confidence"] is True and record["label"] is None
    assert record["origin"] == {"topic": "feedback.raw", "partition": 2, "offset": 41}


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"\xff\xfe", "not_utf8"), (b"{", "not_json"), (b"{}", "schema_invalid"), (None, "empty")],
)
def test_invalid_goes_to_dlq_with_original_bytes(raw, code):
    kind, payload, event_id = process_raw(raw, b"k1", ORIGIN)
    record = json.loads(payload)
    assert (kind, event_id) == ("dlq", None)
    assert record["reason"]["code"] == code and record["reason"]["message"]
    assert record["origin"]["offset"] == 41 and record["key"] == "k1"
    assert (None if raw is None else base64.b64decode(record["raw_b64"])) == raw
