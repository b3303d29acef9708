"""``RoutedRecord.from_json`` (msgspec + inline checks, ``pipelines.records._quick_routed``)
against ``RoutedRecord.from_json_checked`` (``json.loads`` + ``field_of``, the code it falls
back to): for every input, the same record (compared by ``repr``: types, float bits and dict
order included) or the same error, message and all; and ``parse_clean`` alike.

Inputs: the routed records (clean and review) the stream job's step (``route_raw``) makes of
the stream benchmark's payloads and of image events; each mutated field by field (missing,
null, every JSON type, values at the edges); bytes-level edits (duplicate keys, whitespace,
BOM, UTF-16, lone surrogates, NaN, numbers out of range, truncation, flipped bytes); junk.
"""

from __future__ import annotations

import json
import random
from typing import Any

from bench.stream_load import payloads, plan
from pipelines.fates import CLEAN, REVIEW
from pipelines.ingest import parse_clean
from pipelines.records import Origin, RoutedRecord, _quick_routed
from pipelines.transform import route_raw
from tests.helpers import make_event, png_b64

SEED = 20261208


def _routed() -> list[bytes]:
    texts = ["a text", 'q "x": y \x01 \u2028 \U0001f600', "write to a@b.cc or +1 415 555 0101"]
    raws = [v for _, v in payloads(plan("fast", 500, SEED), SEED, texts)]
    raws += [
        json.dumps(make_event(i, subject_id=f"s{i}", feedback={"accepted": bool(i % 2)})).encode()
        for i in range(5)
    ]
    raws += [
        json.dumps(make_event(i, prediction={"label": "x", "confidence": 5e-5})).encode() for i in range(5, 8)
    ]
    out = []
    for offset, raw in enumerate(raws):
        where, _, record, _ = route_raw(raw, None, "feedback.raw", 3, offset, {}, 0.5, 4096, b"k" * 32)
        if where in (CLEAN, REVIEW):
            out.append(record.encode())
    image = {
        "event": {
            **make_event(1, task="image_restoration", input={"image_png_b64": png_b64()}),
            "prediction": {"image_png_b64": png_b64(4, 4)},
            "feedback": {"target_png_b64": png_b64(8, 8)},
        },
        "label": None,
        "low_confidence": False,
        "pii_masks": 0,
        "origin": {"topic": "feedback.raw", "partition": 0, "offset": 1},
        "text_truncated": True,
        "flag": "label_screen",
    }
    out.append(json.dumps(image).encode())
    return out


ROUTED = _routed()

# every value a mutated field takes
ODD: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**70,
    1.5,
    -0.0,
    1e308,
    "",
    "s",
    "é\u2028",
    [],
    [1],
    {},
    {"a": 1},
]
PATHS = [
    ("event",),
    ("label",),
    ("low_confidence",),
    ("pii_masks",),
    ("origin",),
    ("text_truncated",),
    ("flag",),
    ("origin", "topic"),
    ("origin", "partition"),
    ("origin", "offset"),
    *[("event", name) for name in ("event_id", "event_time", "source", "model_name", "task", "label_source")],
    ("event", "model_version"),
    ("event", "input"),
    ("event", "prediction"),
    ("event", "feedback"),
    ("event", "subject_id"),
    ("event", "prediction_id"),
    ("event", "input", "text"),
    ("event", "input", "image_png_b64"),
    ("event", "prediction", "label"),
    ("event", "prediction", "confidence"),
    ("event", "prediction", "image_png_b64"),
    ("event", "feedback", "target_png_b64"),
    ("event", "feedback", "accepted"),
    ("event", "unknown"),
    ("unknown",),
]
TIMES = [
    "2026-11-01T12:00:00Z",
    "2026-11-01t12:00:00z",
    "2026-11-01T12:00:00",
    "2026-11-01T12:00:00+05:30",
    "2026-11-01 12:00:00.123456-01:00",
    "0001-01-01T00:00:00+01:00",  # out of range in UTC: an OverflowError, not a RecordError
    "9999-12-31T23:59:59-01:00",
    "yesterday",
    "",
]


def _outcome(parse, value) -> tuple:
    try:
        return ("ok", repr(parse(value)))
    except Exception as exc:  # noqa: BLE001 - compared: the same error both ways
        cause = exc.__cause__
        return ("error", type(exc), str(exc), type(cause), str(cause))


def _same(value, counts: dict[str, int]) -> None:
    expected = _outcome(RoutedRecord.from_json_checked, value)
    assert _outcome(RoutedRecord.from_json, value) == expected, value[:300]
    quick = _quick_routed(value)
    if quick is not None:
        assert expected == ("ok", repr(quick))
    counts["quick" if quick is not None else "slow"] += 1
    counts[expected[0]] += 1


def _set(data: dict, path: tuple[str, ...], value: Any, delete: bool = False) -> dict:
    data = json.loads(json.dumps(data))
    target = data
    for name in path[:-1]:
        if not isinstance(target.get(name), dict):
            target[name] = {}
        target = target[name]
    if delete:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return data


def test_the_stream_jobs_records_take_the_fast_path_and_parse_the_same():
    assert len(ROUTED) > 350
    for value in ROUTED:
        quick = _quick_routed(value)
        assert quick is not None, value[:200]
        assert repr(quick) == repr(RoutedRecord.from_json_checked(value))
        assert repr(RoutedRecord.from_json(value.decode())) == repr(quick)  # str input too
        assert repr(parse_clean(value)) == repr(quick)


def test_records_mutated_field_by_field_parse_the_same_or_fail_the_same():
    counts = {"quick": 0, "slow": 0, "ok": 0, "error": 0}
    rng = random.Random(SEED)
    for value in rng.sample(ROUTED, 25) + ROUTED[-1:]:
        data = json.loads(value)
        for path in PATHS:
            _same(json.dumps(_set(data, path, None, delete=True)).encode(), counts)
            for odd in ODD:
                _same(json.dumps(_set(data, path, odd)).encode(), counts)
        for stamp in TIMES:
            _same(json.dumps(_set(data, ("event", "event_time"), stamp)).encode(), counts)
    assert counts["quick"] > 2000 and counts["slow"] > 2000 and counts["error"] > 2000  # both ways taken


def test_bytes_level_edits_and_junk_parse_the_same_or_fail_the_same():
    counts = {"quick": 0, "slow": 0, "ok": 0, "error": 0}
    rng = random.Random(SEED + 1)
    base = ROUTED[0]
    text = base.decode()
    edits = [
        base.replace(b'"pii_masks":', b'"pii_masks":7,"pii_masks":'),  # a repeated key: the last wins
        base.replace(b'"event":', b'"event":{},"event":'),
        b" \t\r\n" + base + b"\n ",
        b"\xef\xbb\xbf" + base,  # a BOM: json.loads takes it, msgspec does not
        text.encode("utf-16"),
        text.encode("utf-32"),
        base.replace(b'"low_confidence"', b'"low_\\u0063onfidence"'),
        base.replace(b'"source":"', b'"source":"\\ud800'),  # a lone surrogate, escaped
        base.replace(b'"source":"', b'"source":"\xed\xa0\x80'),  # ... and raw (surrogatepass)
        base.replace(b'"source":"', b'"source":"\\u00e9\\n\\"'),
        base.replace(b'"pii_masks":0', b'"pii_masks":NaN'),
        base.replace(b'"pii_masks":0', b'"pii_masks":1e400'),
        base.replace(b'"pii_masks":0', b'"pii_masks":' + b"9" * 5000),
        base.replace(b'"pii_masks":0', b'"pii_masks":-0'),
        base.replace(b'"pii_masks":0', b'"pii_masks":0.0'),
        base.replace(b'"pii_masks":0', b'"pii_masks":00'),
        base + b"x",
        base + b"\x00",
        base[:-1] + b",}",
        b"[" + base + b"]",
        b"null",
        b"",
        b"{}",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"event":' * 5000,
    ]
    if b'"confidence":' in base:
        edits += [
            base.replace(b'"confidence":', b'"confidence":' + number + b',"x":')
            for number in (
                b"NaN",
                b"Infinity",
                b"-1e400",
                b"1e-400",
                b"0.1000000000000000055511151231257827",
                b"-0",
            )
        ]
    for value in edits:
        _same(value, counts)
    for value in rng.sample(ROUTED, 40):
        for _ in range(15):
            cut = rng.randrange(len(value) + 1)
            _same(value[:cut], counts)
            flipped = bytearray(value)
            flipped[rng.randrange(len(value))] = rng.randrange(256)
            _same(bytes(flipped), counts)
    for _ in range(300):
        _same(bytes(rng.randrange(256) for _ in range(rng.randrange(40))), counts)
    assert counts["quick"] > 100 and counts["error"] > 500


def test_parse_clean_refuses_as_before():
    from pipelines.ingest import IngestError

    for value in (b"{not json", b"[]", json.dumps({"event": {"event_id": "x"}}).encode()):
        try:
            parse_clean(value)
        except IngestError as exc:
            message = str(exc)
        try:
            RoutedRecord.from_json_checked(value)
        except Exception as exc:  # noqa: BLE001
            assert message.startswith(f"clean record is {exc};")


def test_a_record_built_in_python_round_trips():
    event = make_event(3, subject_id="s", prediction_id="p-1")
    record = RoutedRecord(event, "positive", True, 2, Origin("raw", 1, 2**40), True, "flagged")
    assert repr(RoutedRecord.from_json(record.to_json())) == repr(record)
    assert _quick_routed(record.to_json()) is not None


def test_what_json_loads_refuses_is_refused_the_same_way_by_the_fast_path():
    """An attacker's review found two: a memoryview (json.loads refuses it; msgspec does not)
    and nesting just under Python's recursion limit (msgspec recursed less deep)."""
    import json

    from pipelines.records import RoutedRecord

    good = _routed()[0]
    import pytest

    with pytest.raises(TypeError):
        RoutedRecord.from_json(memoryview(good))  # type: ignore[arg-type]
    data = json.loads(good)
    data["event"]["x"] = "NESTED"
    for depth in (60, 500, 900, 960, 990, 994):
        deep = json.dumps(data).replace('"NESTED"', "[" * depth + "]" * depth)
        assert _outcome(RoutedRecord.from_json, deep) == _outcome(RoutedRecord.from_json_checked, deep)
