"""The typed records of the stream job's output topics: exact wire format, round trips,
clear errors on anything else, and the stream catch-up wait."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from flywheel.events import validate_event
from pipelines.dlq import DlqRecord, RawCopy
from pipelines.records import DuplicateRecord, Origin, RecordError, RoutedRecord, origin_of
from pipelines.stats import Accounting, settle
from tests.helpers import make_event

ORIGIN = Origin("feedback.raw", 2, 41)


def routed(**overrides) -> RoutedRecord:
    return RoutedRecord.of(validate_event(make_event(7, **overrides)), True, 1, ORIGIN)


def test_routed_record_wire_format_is_unchanged():
    event = validate_event(make_event(7, feedback={"accepted": True}))
    assert RoutedRecord.of(event, True, 1, ORIGIN, text_truncated=True).to_json() == (
        '{"event":{"schema_version":1,"event_id":"evt-000007","event_time":"2026-11-01T12:00:00Z",'
        '"source":"tests","model_name":"sentiment","model_version":"1","task":"text-classification",'
        '"input":{"text":"sample text number 7"},"prediction":{"label":"positive","confidence":0.9},'
        '"feedback":{"accepted":true},"label_source":"user"},"label":"positive","low_confidence":true,'
        '"pii_masks":1,"origin":{"topic":"feedback.raw","partition":2,"offset":41},"text_truncated":true}'
    )


def test_routed_record_round_trips_with_typed_accessors():
    record = routed(feedback=None, event_time="2026-11-01T14:00:00+02:00")
    wire = record.to_json()
    parsed = RoutedRecord.from_json(wire.encode())
    assert parsed == record and parsed.to_json() == wire and RoutedRecord.from_json(wire) == record
    assert (parsed.event_id, parsed.model_name, parsed.model_version) == ("evt-000007", "sentiment", "1")
    assert parsed.event_time == datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert (parsed.text, parsed.image_png_b64, parsed.label) == ("sample text number 7", None, None)
    assert (parsed.prediction_label, parsed.confidence) == ("positive", 0.9)
    assert (parsed.task, parsed.source, parsed.label_source) == ("text-classification", "tests", "user")
    assert (parsed.origin.partition, parsed.origin.offset, parsed.text_truncated) == (2, 41, False)


def _without(data: dict, path: str) -> dict:
    *parents, name = path.split(".")
    inner = data
    for part in parents:
        inner = inner[part]
    del inner[name]
    return data


def _with(data: dict, path: str, value) -> dict:
    *parents, name = path.split(".")
    inner = data
    for part in parents:
        inner = inner[part]
    inner[name] = value
    return data


def _routed_data() -> dict:
    return json.loads(routed().to_json())


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"\xff", "unreadable as UTF-8 JSON (UnicodeDecodeError"),
        (b"{", "unreadable as UTF-8 JSON (JSONDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "unreadable as UTF-8 JSON (RecursionError"),
        (b"[]", "a JSON list, not an object"),
        (b"{}", "event is missing"),
        (json.dumps(_without(_routed_data(), "event.event_id")), "event.event_id is missing"),
        (json.dumps(_with(_routed_data(), "event.event_id", 5)), "event.event_id must be a string"),
        (json.dumps(_with(_routed_data(), "event.input", "x")), "event.input must be an object"),
        (json.dumps(_with(_routed_data(), "event.event_time", "yesterday")), "not an RFC 3339"),
        (json.dumps(_with(_routed_data(), "event.event_time", "2026-11-01T12:00:00")), "no UTC offset"),
        (json.dumps(_with(_routed_data(), "event.prediction.confidence", "0.9")), "must be a number"),
        (json.dumps(_with(_routed_data(), "low_confidence", 1)), "low_confidence must be true or false"),
        (json.dumps(_with(_routed_data(), "pii_masks", True)), "pii_masks must be an integer"),
        (json.dumps(_without(_routed_data(), "origin.offset")), "origin.offset is missing"),
    ],
)
def test_a_malformed_routed_record_is_a_clear_error(value, says):
    with pytest.raises(RecordError, match="not a routed record") as info:
        RoutedRecord.from_json(value)
    assert says in str(info.value)


def test_dlq_record_round_trips_and_keeps_key_order():
    record = DlqRecord(
        "schema_invalid",
        "input.text: is required",
        ORIGIN,
        (("input.text", "is required"),),
        1,
        "k1",
        RawCopy(3, "ab", False, True, 0, "{ }"),
    )
    wire = record.to_json()
    assert list(json.loads(wire)) == ["reason", "origin", "key", "raw"]
    assert list(json.loads(wire)["reason"]) == ["code", "message", "problems", "problems_total"]
    assert DlqRecord.from_json(wire) == record and DlqRecord.from_json(wire).to_json() == wire
    bare = DlqRecord("internal_error", "boom", ORIGIN, raw=RawCopy(12))
    assert json.loads(bare.to_json())["raw"] == {"size": 12}
    assert DlqRecord.from_json(bare.to_json()) == bare
    with pytest.raises(RecordError, match=r"not a DLQ record: reason\.code is missing"):
        DlqRecord.from_json(json.dumps({"reason": {}, "origin": ORIGIN.as_dict()}))


def test_duplicate_record_and_origin_of_any_output_record():
    dup = DuplicateRecord("evt-1", ORIGIN)
    assert dup.to_json() == '{"event_id":"evt-1","origin":{"topic":"feedback.raw","partition":2,"offset":41}}'
    assert DuplicateRecord.from_json(dup.to_json().encode()) == dup
    for wire in (dup.to_json(), routed().to_json(), DlqRecord("empty", "m", ORIGIN).to_json()):
        assert origin_of(wire) == ORIGIN
    with pytest.raises(RecordError, match=r"origin\.partition must be an integer"):
        origin_of('{"origin": {"topic": "t", "partition": "2", "offset": 1}}')


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_settle_returns_the_first_balanced_accounting():
    reads = iter([Accounting(10, 5, 0, 0, 0), Accounting(10, 8, 1, 0, 0), Accounting(10, 8, 1, 1, 0)])
    clock = FakeClock()
    a = settle(lambda: next(reads), 30, 1.0, clock=clock, sleep=clock.sleep)
    assert a.balanced and a.accounted == 10 and clock.now == 2.0


def test_settle_times_out_saying_what_did_not_happen_and_where_to_look():
    clock = FakeClock()
    with pytest.raises(TimeoutError) as info:
        settle(lambda: Accounting(10, 5, 0, 1, 0), 5, 2.0, "the logs in /x", clock, clock.sleep)
    message = str(info.value)
    assert "did not catch up within 5s" in message and "+4 in flight" in message
    assert "the logs in /x" in message and clock.now == 5.0


def test_a_review_label_is_a_valid_event_answering_the_routed_one():
    from pipelines.review import review_event

    item = RoutedRecord.from_json(routed(feedback=None).to_json())
    event = validate_event(review_event(item, "negative", ["ann"]))
    assert (event.event_id, event.prediction_id, event.label_source) == ("evt-000007.review", None, "review")
    served = RoutedRecord.from_json(routed(feedback=None, prediction_id="p-42").to_json())
    assert validate_event(review_event(served, "negative", ["ann"])).prediction_id == "p-42"
    assert (event.source, event.verified_label, event.input.text) == ("review:ann", "negative", item.text)
    assert event.prediction is not None and event.prediction.confidence == 0.9
