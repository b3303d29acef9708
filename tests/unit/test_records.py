"""Per-record logic of the stream job: normalising, routing, DLQ records, no poison pill."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.events import MAX_RECORD_BYTES, MAX_TEXT_CHARS, validate_event
from pipelines import transform
from pipelines.dlq import DlqRecord
from pipelines.pii import mask_pii
from pipelines.records import CLEAN, DLQ, REVIEW, Origin, RoutedRecord, origin_of
from pipelines.transform import normalise_text, process_raw, route
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
        ("at 12:30:45 on 2024-03-15T10:20:30Z", "at 12:30:45 on 2024-03-15T10:20:30Z", 0),
    ],
)
def test_mask_pii(text, expected, count):
    assert mask_pii(text) == (expected, count)


def test_normalise_text():
    fullwidth = "\uff46\uff55\uff4c\uff4c"  # "full" in fullwidth letters
    assert normalise_text(f"  {fullwidth}\u00a0width\t\n text\x00\x1b  ") == "full width text"


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


def raw_event(**overrides) -> bytes:
    return json.dumps(make_event(7, **overrides)).encode()


def test_valid_event_is_masked_and_routed_with_origin_in_one_step():
    raw = raw_event(
        input={"text": "mail me:  a@b.io "}, feedback=None, prediction={"label": "neg", "confidence": 0.1}
    )
    out = process_raw(raw, b"evt-000007", ORIGIN, {"sentiment": 0.05}, 0.5)
    assert (out.destination, out.event_id) == (CLEAN, "evt-000007")  # per-model threshold 0.05
    out = process_raw(raw, b"evt-000007", ORIGIN, {}, 0.5)
    record = RoutedRecord.from_json(out.record)
    assert out.destination == REVIEW
    assert record.text == "mail me: [EMAIL]"
    assert record.pii_masks == 1 and record.low_confidence is True and record.label is None
    assert record.origin == ORIGIN and record.text_truncated is False
    assert '"text_truncated"' not in out.record


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe", "not_utf8"),
        (b"{", "not_json"),
        (b"{}", "schema_invalid"),
        (None, "empty"),
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"x":' * 5000 + b"1" + b"}" * 5000, "too_deep"),
    ],
)
def test_invalid_goes_to_dlq_with_reason_size_and_hash(raw, code):
    out = process_raw(raw, b"k1", ORIGIN)
    record = DlqRecord.from_json(out.record)
    assert (out.destination, out.event_id) == (DLQ, None)
    assert record.code == code and record.message
    assert record.origin == ORIGIN and record.key == "k1"
    if raw is None:
        assert record.raw is None
    else:
        assert record.raw.size == len(raw)
        assert record.raw.sha256 == hashlib.sha256(raw).hexdigest()


def test_dlq_copy_is_masked_and_truncated_with_full_size_and_hash():
    raw = b'{"note": "write to jane@example.com", "pad": "' + b"x" * 900_000 + b'"}'
    out = process_raw(raw, None, ORIGIN, max_dlq_raw_bytes=1024)
    raw_copy = DlqRecord.from_json(out.record).raw
    assert raw_copy.truncated is True and raw_copy.size == len(raw)
    assert raw_copy.sha256 == hashlib.sha256(raw).hexdigest()
    assert "jane@example.com" not in out.record and "[EMAIL]" in raw_copy.text
    assert len(out.record) < 4096


def test_dlq_record_of_a_maximal_invalid_event_fits_the_request_size():
    # ~1 MB of extra keys: the reason lists are capped as well as the raw copy
    raw = json.dumps({f"k{i:06d}" + "y" * 100: i for i in range(9000)}).encode()[: 1_000_000 - 1] + b"}"
    out = process_raw(raw, b"k" * 10_000, ORIGIN)
    assert out.destination == DLQ and len(out.record.encode()) < 200_000


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("   \t\n ", "visible"),
        ("\u200b\u200b", "visible"),
    ],
)
def test_text_without_visible_characters_is_rejected_by_the_contract(text, reason):
    out = process_raw(raw_event(input={"text": text}), None, ORIGIN)
    record = DlqRecord.from_json(out.record)
    assert out.destination == DLQ and record.code == "schema_invalid"
    assert reason in record.message


@pytest.mark.parametrize(
    "text",
    [
        "\ufdfa" * MAX_TEXT_CHARS,  # NFKC expands this one character to 18
        "a@b.cc " * (MAX_TEXT_CHARS // 7),  # masking makes each e-mail one character longer
    ],
)
def test_text_that_grows_past_the_cap_is_truncated_with_a_flag(text):
    assert len(text) <= MAX_TEXT_CHARS
    out = process_raw(raw_event(input={"text": text}), None, ORIGIN)
    record = RoutedRecord.from_json(out.record)
    assert out.destination == CLEAN
    assert record.text_truncated is True and len(record.text) == MAX_TEXT_CHARS


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_at_the_edge_of_time_go_to_the_dlq(stamp):
    out = process_raw(raw_event(event_time=stamp), None, ORIGIN)
    assert out.destination == DLQ and DlqRecord.from_json(out.record).code == "schema_invalid"


def test_unexpected_exception_becomes_an_internal_error_dlq_record(monkeypatch):
    def boom(event):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(transform, "clean_event", boom)
    out = process_raw(raw_event(), b"k", ORIGIN)
    record = DlqRecord.from_json(out.record)
    assert out.destination == DLQ
    assert record.code == "internal_error"
    assert "ZeroDivisionError: planted" in record.message


def _json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20,
    )


def _mutated_events():
    """Valid events with one field replaced by an arbitrary JSON value."""
    fields = list(make_event(0))
    return st.builds(
        lambda field, value: {**make_event(3), field: value},
        st.sampled_from(fields),
        _json_values(),
    )


def _check_outcome(raw: bytes | None) -> None:
    out = process_raw(raw, b"key", ORIGIN)
    assert out.destination in (DLQ, REVIEW, CLEAN)
    assert len(out.record.encode("utf-8")) <= MAX_RECORD_BYTES  # strict: the sink must encode it
    assert origin_of(out.record) == ORIGIN
    if out.destination == DLQ:
        assert out.event_id is None and DlqRecord.from_json(out.record).code
    else:
        record = RoutedRecord.from_json(out.record)
        assert out.event_id == record.event_id and record.to_json() == out.record


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.none())
def test_process_raw_never_raises_on_random_bytes(raw):
    _check_outcome(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values() | _mutated_events())
def test_process_raw_never_raises_on_random_json(value):
    _check_outcome(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=300))
def test_process_raw_never_raises_on_random_text(text):
    _check_outcome(json.dumps(make_event(5, input={"text": text}), ensure_ascii=False).encode())


def test_hostile_corpus_ends_where_expected_without_the_jvm():
    """The same corpus the integration test streams through the real job."""
    from tests.hostile import HOSTILE

    assert len({c.kind for c in HOSTILE}) >= 30
    seen: set[str] = set()
    for case in HOSTILE:
        out = process_raw(case.value, case.key, ORIGIN)
        out.record.encode("utf-8")
        if out.destination == DLQ:
            record = DlqRecord.from_json(out.record)
            assert (DLQ, record.code) == (case.destination, case.code), (case.kind, record)
            assert len(out.record) < 200_000, case.kind
            continue
        destination = "duplicates" if out.event_id in seen else out.destination
        seen.add(out.event_id)
        assert destination == case.destination, (case.kind, out.record[:300])


def test_a_flag_from_the_label_screen_survives_the_round_trip_and_is_absent_otherwise():
    import dataclasses

    from pipelines.records import RecordError

    plain = RoutedRecord.of(validate_event(make_event(1)), True, 0, Origin("label-screen", 0, 0))
    assert '"flag"' not in plain.to_json() and RoutedRecord.from_json(plain.to_json()).flag is None
    flagged = dataclasses.replace(plain, flag="label disputed: 'neutral' given")
    assert RoutedRecord.from_json(flagged.to_json()) == flagged
    with pytest.raises(RecordError, match="flag"):
        RoutedRecord.from_json(flagged.to_json().replace('"flag":"label', '"flag":7,"x":"'))


def test_normalise_text_fast_path_for_printable_ascii_changes_nothing():
    """Printable ASCII skips NFKC and the control filter; the answer must be the full path's."""
    import random
    import unicodedata

    from pipelines.transform import _CONTROL, normalise_text

    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + ["\u00a0", "\u2003", "\ufb01", "\u00e9", "\u200b", "\x85"]
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        full = " ".join(_CONTROL.sub("", unicodedata.normalize("NFKC", text)).split())
        assert normalise_text(text) == full, repr(text)
