"""The feedback contract v1: valid events pass, hostile ones fail naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from flywheel.errors import InvalidEventError
from flywheel.events import (
    MAX_EVENT_BYTES,
    MAX_TEXT_CHARS,
    NOT_JSON,
    NOT_UTF8,
    SCHEMA_INVALID,
    TOO_LARGE,
    event_time_text,
    feedback_event,
    json_schema,
    parse_event,
    validate_event,
)
from tests.helpers import make_event, png_b64

SCHEMA_FILE = Path(__file__).parents[2] / "flywheel" / "schemas" / "feedback-event-v1.schema.json"


def image_event(**overrides):
    fields = {
        "task": "image-restoration",
        "input": {"image_png_b64": png_b64()},
        "prediction": {"image_png_b64": png_b64()},
        "feedback": {"target_png_b64": png_b64()},
    }
    return make_event(**{**fields, **overrides})


VALID = [
    make_event(),
    make_event(feedback=None),
    make_event(feedback={"accepted": True}),
    make_event(prediction=None, label_source="review", model_version=None),
    make_event(event_time="2026-11-01T14:00:00+02:00", prediction_id="p:1"),
    # an accept of a served prediction, named by the prediction_id /v1/predict answered
    make_event(prediction=None, model_version=None, prediction_id="p-1", feedback={"accepted": True}),
    image_event(),
    image_event(feedback={"accepted": False}),
]


def problems_of(data) -> dict[str, str]:
    with pytest.raises(InvalidEventError) as info:
        validate_event(data) if isinstance(data, dict) else parse_event(data)
    return dict(info.value.problems)


@pytest.mark.parametrize("event", VALID)
def test_valid_events_pass_and_round_trip(event):
    parsed = validate_event(event)
    assert parse_event(parsed.to_json_bytes()) == parsed


def test_event_time_is_normalised_to_utc():
    parsed = validate_event(make_event(event_time="2026-11-01T14:00:00+02:00"))
    assert parsed.event_time == datetime(2026, 11, 1, 12, tzinfo=UTC)


def test_verified_label_comes_from_label_or_accepted_prediction():
    assert validate_event(make_event(feedback={"label": "negative"})).verified_label == "negative"
    assert validate_event(make_event(feedback={"accepted": True})).verified_label == "positive"
    assert validate_event(make_event(feedback={"accepted": False})).verified_label is None
    assert validate_event(make_event(feedback=None)).verified_label is None


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        (
            {"prediction": {"label": "a", "confidence": 1.5}},
            "prediction.confidence",
            "less than or equal to 1",
        ),
        (
            {"prediction": {"label": "a", "confidence": -0.1}},
            "prediction.confidence",
            "greater than",
        ),
        (
            {"prediction": {"label": "a", "confidence": float("nan")}},
            "prediction.confidence",
            "finite",
        ),
        (
            {"prediction": {"label": "a", "confidence": float("inf")}},
            "prediction.confidence",
            "finite",
        ),
        (
            {"prediction": {"label": "a", "confidence": "0.9"}},
            "prediction.confidence",
            "valid number",
        ),
        ({"prediction": {"label": "a"}}, "prediction", "confidence is missing"),
        ({"event_time": "yesterday"}, "event_time", "RFC 3339"),
        ({"event_time": 1700000000}, "event_time", "RFC 3339 string"),
        ({"event_time": "2026-11-01T12:00:00"}, "event_time", "UTC offset"),
        ({"event_time": "1999-12-31T00:00:00Z"}, "event_time", "before 2000"),
        ({"event_id": ""}, "event_id", "at least 1"),
        ({"event_id": "a b"}, "event_id", "pattern"),
        ({"event_id": "x" * 129}, "event_id", "at most 128"),
        ({"event_id": 42}, "event_id", "valid string"),
        ({"schema_version": 2}, "schema_version", "1"),
        ({"task": "translation"}, "task", "text-classification"),
        ({"label_source": "robot"}, "label_source", "user"),
        (
            {"input": {"text": "x" * (MAX_TEXT_CHARS + 1)}},
            "input.text",
            f"at most {MAX_TEXT_CHARS}",
        ),
        ({"input": {"text": "hi", "image_png_b64": png_b64()}}, "input", "exactly one"),
        ({"input": {}}, "input", "exactly one"),
        ({"input": "just a string"}, "input", "valid dictionary"),
        ({"feedback": {"label": "a", "accepted": True}}, "feedback", "exactly one"),
        ({"feedback": {"accepted": "yes"}}, "feedback.accepted", "valid boolean"),
        ({"colour": "blue"}, "colour", "not a field"),
        ({"input": {"text": "hi", "lang": "en"}}, "input.lang", "not a field"),
        ({"input": {"image_png_b64": png_b64()}}, "", "needs input.text"),
        ({"feedback": {"target_png_b64": png_b64()}}, "", "needs feedback with label"),
        (
            {"prediction": None, "feedback": {"accepted": True}},
            "",
            "needs the prediction it accepts or rejects, or the prediction_id",
        ),
    ],
)
def test_hostile_input_names_the_field(overrides, field, fragment):
    problems = problems_of(make_event(**overrides))
    assert field in problems, problems
    assert fragment in problems[field]


def test_far_future_timestamp_rejected_but_small_skew_allowed():
    soon = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    validate_event(make_event(event_time=soon))
    assert "in the future" in problems_of(make_event(event_time=later))["event_time"]


@pytest.mark.parametrize("field", ["event_id", "source", "input", "label_source", "task"])
def test_missing_required_field(field):
    event = make_event()
    del event[field]
    assert problems_of(event)[field] == "is required"


def test_image_must_be_png_and_base64():
    bad = image_event(input={"image_png_b64": "not base64!!"})
    assert "base64" in problems_of(bad)["input.image_png_b64"]
    jpeg = image_event(input={"image_png_b64": "/9j/4AAQSkZJRgABAQ=="})
    assert "not a PNG" in problems_of(jpeg)["input.image_png_b64"]
    huge = image_event(input={"image_png_b64": "A" * 300_000})
    assert "at most" in problems_of(huge)["input.image_png_b64"]


def test_images_must_decode_within_bounds_and_match_the_input_size():
    import base64

    whole = base64.b64decode(png_b64())
    cut = image_event(input={"image_png_b64": base64.b64encode(whole[: len(whole) // 2]).decode()})
    assert "PNG" in problems_of(cut)["input.image_png_b64"]
    small = image_event(input={"image_png_b64": png_b64(4, 4)})
    assert "4x4" in problems_of(small)["input.image_png_b64"]
    wide = image_event(input={"image_png_b64": png_b64(600, 8)})
    assert "600" in problems_of(wide)["input.image_png_b64"]
    other = image_event(feedback={"target_png_b64": png_b64(16, 24)})
    assert "16x24 but input.image_png_b64 is 16x16" in problems_of(other)[""]


def test_wire_errors_have_machine_codes():
    with pytest.raises(InvalidEventError) as info:
        parse_event(b"\xff\xfe not utf8")
    assert info.value.code == NOT_UTF8
    with pytest.raises(InvalidEventError) as info:
        parse_event(b'{"schema_version": 1,')
    assert info.value.code == NOT_JSON
    with pytest.raises(InvalidEventError) as info:
        parse_event(b'{"confidence": NaN}')
    assert info.value.code == NOT_JSON
    with pytest.raises(InvalidEventError) as info:
        parse_event(b" " * (MAX_EVENT_BYTES + 1))
    assert info.value.code == TOO_LARGE
    with pytest.raises(InvalidEventError) as info:
        parse_event(b"[1, 2]")
    assert info.value.code == SCHEMA_INVALID
    assert "JSON object" in str(info.value)


def test_committed_schema_file_matches_model():
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == json_schema(), "regenerate: python -m flywheel.events > " + str(SCHEMA_FILE)


HOSTILE_FOR_SCHEMA = [
    make_event(prediction={"label": "a", "confidence": 1.5}),
    make_event(colour="blue"),
    make_event(input={"text": "hi", "image_png_b64": png_b64()}),
    make_event(input={}),
    make_event(feedback={"label": "a", "accepted": True}),
    make_event(event_id="a b"),
    make_event(task="translation"),
    make_event(prediction={"label": "a"}),
    {k: v for k, v in make_event().items() if k != "source"},
]


def test_json_schema_agrees_with_model():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for event in VALID:
        assert not list(validator.iter_errors(json.loads(validate_event(event).to_json_bytes())))
    for event in HOSTILE_FOR_SCHEMA:
        with pytest.raises(InvalidEventError):
            validate_event(event)
        assert list(validator.iter_errors(event)), f"schema accepted what the model rejects: {event}"


def test_built_events_pass_the_contract_and_the_schema():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    before = datetime.now(UTC).replace(microsecond=0)
    text = feedback_event(
        "e-1", "sentiment", text="fine", feedback={"label": "positive"}, label_source="user", source="app"
    )
    order = "schema_version event_id event_time source model_name task input feedback label_source"
    assert list(text) == order.split()  # the schema's order, unset optionals left out
    image = feedback_event(
        "e-2",
        "restorer",
        image_png_b64=png_b64(),
        prediction={"image_png_b64": png_b64()},
        feedback={"accepted": True},
        label_source="review",
        source="app",
        model_version="3",
        event_time=datetime(2026, 11, 1, 14, tzinfo=timezone(timedelta(hours=2))),
        prediction_id="p-1",
    )
    for event in (text, image):
        assert not list(validator.iter_errors(event))
        parsed = parse_event(json.dumps(event).encode())
        assert parsed.to_json_dict() == event
    assert parse_event(json.dumps(text)).event_time >= before  # defaults to now
    assert text["event_time"].endswith("Z") and text["task"] == "text-classification"
    assert image["event_time"] == "2026-11-01T12:00:00Z" and image["task"] == "image-restoration"


def test_event_time_text_needs_a_timezone():
    assert event_time_text(datetime(2026, 1, 31, 12, tzinfo=UTC)) == "2026-01-31T12:00:00Z"
    with pytest.raises(ValueError, match="needs a timezone"):
        event_time_text(datetime(2026, 1, 31, 12))
