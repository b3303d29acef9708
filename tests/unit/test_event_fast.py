"""flywheel.event_fast against flywheel.events.parse_event, on thousands of generated inputs.

For every input both parsers must agree: the same FeedbackEvent (``==``, the same repr, JSON
and ``model_fields_set`` down to the nested models) or the same refusal (InvalidEventError
with the same code and problems, or the same exception type). Inputs: the stream
benchmark's events, the test helpers' and the hostile corpus, then mutations of valid events
(each field dropped, renamed, nulled, retyped, at and past its length limits, with unicode,
controls and trailing newlines; huge and odd numbers; timestamps; duplicate keys; NaN;
nested junk) and of their bytes (truncated, not UTF-8, whitespace, escapes, surrogates,
top-level arrays). The limits come from the model's JSON schema, not from event_fast.
Seeded: a failure names its input, and reruns the same.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import flywheel.event_fast as event_fast
from bench.stream_load import payloads, plan
from flywheel.errors import InvalidEventError
from flywheel.event_fast import copy_with, parse_event_fast
from flywheel.events import FeedbackEvent, parse_event
from tests.helpers import make_event, mixed_traffic, png_b64
from tests.hostile import HOSTILE

SEED = 20261207
_ABSENT = object()
TEXTS = (
    "the new release is much faster, thanks",
    'she said "great": five stars',  # a '":' inside a string value (the exact key count)
    "mail jo.doe@example.com or call +1 415 555 0100",
    "caf\u00e9 \u2013 \u00fcber \U0001f600 \u0915\u093f",
    "tab\there, newline\nthere, \x01 control",
)


# ---- what each parser makes of an input -------------------------------------------


def _fields_sets(event: FeedbackEvent) -> tuple[Any, ...]:
    parts = (event, event.input, event.prediction, event.feedback)
    return tuple(None if p is None else frozenset(p.model_fields_set) for p in parts)


def outcome(parse: Any, raw: Any) -> tuple[Any, ...]:
    try:
        event = parse(raw)
    except InvalidEventError as exc:
        return ("invalid", exc.code, exc.problems)
    except Exception as exc:  # noqa: BLE001 - then both must fail alike
        return ("raised", type(exc).__name__)
    return ("event", event, repr(event), event.to_json_bytes(), _fields_sets(event))


# ---- the contract's fields and limits, from the model's JSON schema -------------------


def _string_fields() -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, string schema) of every string field with a length limit."""
    schema = FeedbackEvent.model_json_schema()
    out = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for name, prop in node.get("properties", {}).items():
            options = prop.get("anyOf", [prop])
            for option in options:
                if "$ref" in option:
                    walk(schema["$defs"][option["$ref"].split("/")[-1]], (*path, name))
                elif option.get("type") == "string" and "maxLength" in option:
                    out.append(((*path, name), option))

    walk(schema, ())
    return out


STRING_FIELDS = _string_fields()


def _set(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``event`` with ``path`` set to ``value`` (_ABSENT: removed)."""
    out = json.loads(json.dumps(event))
    node = out
    for name in path[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    if value is _ABSENT:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


def _paths(event: dict[str, Any]) -> list[tuple[str, ...]]:
    paths = []
    for name, value in event.items():
        paths.append((name,))
        if isinstance(value, dict):
            paths += [(name, inner) for inner in value]
    return paths


# ---- inputs -----------------------------------------------------------------------


def base_events(rng: random.Random) -> list[dict[str, Any]]:
    """Valid events as JSON data: the benchmark's mix, the helpers', a few image events."""
    bench = payloads(plan("diff", 400, SEED), SEED, list(TEXTS))
    events = [json.loads(v) for _, v in bench if v.startswith(b"{") and v.endswith(b"}")]
    events = [e for e in events if _valid(e)][:160]
    small, other = png_b64(8, 8), png_b64(16, 8)
    for i, text in enumerate(TEXTS):
        events += [
            make_event(i, input={"text": text}),
            make_event(i, feedback={"accepted": True}, subject_id=f"user {i}"),
            make_event(i, feedback={"accepted": False}, prediction=None, prediction_id=f"p:{i}"),
            make_event(i, prediction=None, label_source="review", model_version=None),
            make_event(i, event_time=f"2026-03-0{i + 1}T10:00:00.{'1' * (i + 1)}+0{i}:30"),
        ]
    image = make_event(
        90,
        task="image-restoration",
        input={"image_png_b64": small},
        prediction={"image_png_b64": small},
        feedback={"target_png_b64": small},
    )
    events += [image, _set(image, ("feedback",), {"accepted": True})]
    events += [_set(image, ("prediction", "image_png_b64"), other)]  # sizes differ: invalid
    rng.shuffle(events)
    return events


def _valid(event: dict[str, Any]) -> bool:
    try:
        parse_event(json.dumps(event).encode())
    except InvalidEventError:
        return False
    return True


def field_mutations(event: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    """Each field dropped, nulled, renamed and retyped; a new field; whole parts swapped."""
    odd_values = [None, 0, 1, -1, 1.5, -0.0, True, False, "", "x", [], {}, [1], {"a": 1}, 10**30, "1"]
    for path in _paths(event):
        yield _set(event, path, _ABSENT)
        yield _set(event, path, rng.choice(odd_values))
        yield _set(_set(event, path, _ABSENT), (*path[:-1], path[-1] + "_"), 1)
    yield {**event, "extra": {"nested": [[{"junk": None}]]}}
    yield {**event, "input": {"text": "t", "image_png_b64": png_b64()}}
    yield {**event, "input": {}}
    yield {**event, "feedback": {"label": "a", "accepted": True}}
    yield {**event, "feedback": {"accepted": rng.choice([True, False])}, "prediction": None}
    yield {**event, "prediction": {"label": "a"}}
    yield {**event, "prediction": {"confidence": 0.5}}
    yield {**event, "task": rng.choice(["image-restoration", "text", "TEXT-CLASSIFICATION", 1])}
    yield {**event, "label_source": rng.choice(["user", "review", "system", "User", "other", ""])}


def value_mutations(event: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    """String fields at and past their limits with awkward characters; numbers; timestamps."""
    for path, limits in STRING_FIELDS:
        if path[0] == "input" and "text" not in event["input"] and path[-1] == "text":
            continue
        top = limits["maxLength"]
        if top > 20_000:
            continue  # the image fields: their lengths are the PNG tests' business
        for value in (
            "a" * top,
            "a" * (top + 1),
            "\U0001f600" * top,
            "\U0001f600" * (top + 1),
            "",
            " ",
            "\u200b",
            "ok\n",
            "ok\x7f",
            "ok\x85",
            "ok\x1f",
            "\u00e9l\u00e8ve",
            "a/b",
            ".hidden",
            "a:b.c-d_e",
            rng.choice(TEXTS),
        ):
            yield _set(event, path, value)
    confidences = [0, 1, 0.0, 1.0, -0.0, 0.5, 1e-7, 5e-324, 1.0000000000000002, 0.9999999999999999, -1e-300]
    for value in confidences + [rng.random() for _ in range(3)]:
        if isinstance(event.get("prediction"), dict) and "label" in event["prediction"]:
            yield _set(event, ("prediction", "confidence"), value)
    for value in (1, 1.0, 2, 0, -1, True, "1", None):
        yield _set(event, ("schema_version",), value)
    now = datetime.now(UTC)
    for value in (
        "2026-01-31T12:00:00Z",
        "2026-01-31t12:00:00z",
        "2026-01-31T12:00:00.123456789Z",
        "2026-01-31T12:00:00.1234567891Z",
        "2026-01-31T12:00:00+14:00",
        "2026-01-31T12:00:00-00:00",
        "2026-01-31T12:00:00",
        "2026-01-31 12:00:00Z",
        "2026-02-30T12:00:00Z",
        "1999-12-31T23:59:59Z",
        "2000-01-01T00:00:00+00:01",
        "\u0662\u0660\u0662\u0666-01-31T12:00:00Z",
        "2026-01-31T12:00:00Z\n",
        (now + timedelta(minutes=4)).isoformat(),
        (now + timedelta(minutes=6)).isoformat(),
        (now - timedelta(days=rng.randint(1, 9000))).isoformat().replace("+00:00", "Z"),
        12,
    ):
        yield _set(event, ("event_time",), value)


def byte_mutations(raw: bytes, rng: random.Random) -> Iterator[bytes]:
    """The same event's bytes: duplicate keys, whitespace, escapes, NaN, truncation, bad UTF-8."""
    text = raw.decode()
    first_key = text[1 : text.index(":")]
    yield raw[: rng.randrange(len(raw))]
    yield raw[: rng.randrange(len(raw))] + b"}"
    yield b" \t\n\r" + raw + b"\n "
    yield b"\x0c" + raw
    yield raw + b" x"
    yield raw + raw
    yield b"[" + raw + b"]"
    yield b"\xef\xbb\xbf" + raw
    yield text.replace('": ', '" : ', 1).encode()
    yield text.replace('": ', '"\n\t:', rng.randint(1, 5)).encode()
    yield json.dumps(json.loads(raw), indent=2, ensure_ascii=False).encode()
    yield json.dumps(json.loads(raw), separators=(",", ":")).encode()
    yield json.dumps(json.loads(raw), ensure_ascii=False).encode()
    # duplicate keys: the same value, another value, in a nested object, with whitespace
    yield ("{" + first_key + ": 1, " + text[1:]).encode()
    yield text.replace('"source": ', '"source": "dup", "source": ', 1).encode()
    yield text.replace('"source": ', '"source" : "dup", "source": ', 1).encode()
    yield text.replace('"source": ', '"sourc\\u0065": "dup", "source": ', 1).encode()
    yield text.replace('{"text": ', '{"text": "dup", "text": ', 1).encode()
    yield text.replace('{"label": ', '{"label": "a", "label": ', 1).encode()
    yield text.replace('"model_name": ', '"model_name": "x", "\\u006dodel_name": ', 1).encode()
    # a key escaped, a string with every escape, a lone and a paired surrogate
    yield text.replace('"source"', '"\\u0073ource"', 1).encode()
    yield text.replace('"source": "', '"source": "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9', 1).encode()
    yield text.replace('"source": "', '"source": "\\ud83d\\ude00', 1).encode()
    yield text.replace('"source": "', '"source": "\\ud83d', 1).encode()
    yield text.replace('"source": "', '"source": "\\udc00x', 1).encode()
    yield text.replace('"source": "', '"source": "\\u0000', 1).encode()
    # numbers JSON or Python's json may not take
    for number in (
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "1e-400",
        "01",
        "1.",
        ".5",
        "+1",
        "0.5e1",
    ):
        yield text.replace('"schema_version": 1', '"schema_version": 1, "extra": ' + number, 1).encode()
        if '"confidence": ' in text:
            start = text.index('"confidence": ') + len('"confidence": ')
            end = min(i for i in (text.find(",", start), text.find("}", start)) if i >= 0)
            yield (text[:start] + number + text[end:]).encode()
    yield text.replace('"schema_version": 1', '"schema_version": ' + "1" * 5000, 1).encode()
    yield text.replace('"schema_version": 1', '"schema_version": 1' + "0" * 40, 1).encode()
    # not UTF-8, and nesting
    at = rng.randrange(1, len(raw))
    for junk in (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"):
        yield raw[:at] + junk + raw[at:]
        yield raw.replace(b'"source": "', b'"source": "' + junk, 1)
    depth = rng.choice([5, 31, 32, 33, 40])
    yield text.replace(
        '"schema_version": 1', '"schema_version": 1, "x": ' + "[" * depth + "]" * depth, 1
    ).encode()
    yield text.replace('"source": "', '"source": "' + "[{" * 40, 1).encode()


def fixed_inputs() -> list[Any]:
    values: list[Any] = [c.value for c in HOSTILE if c.value is not None]
    values += mixed_traffic(60, seed=SEED)[0]
    values += [b"", b" ", b"null", b"[]", b"{}", b"1", b'"s"', b"[{}]", b"{", b"}", b"\x00", "{}"]
    values += [json.dumps(make_event(3)), bytearray(json.dumps(make_event(4)).encode())]  # not bytes
    return values


def all_inputs() -> list[Any]:
    rng = random.Random(SEED)
    inputs = fixed_inputs()
    for event in base_events(rng):
        raw = json.dumps(event).encode()
        inputs.append(raw)
        inputs += list(byte_mutations(raw, rng))
        mutated = list(field_mutations(event, rng)) + list(value_mutations(event, rng))
        inputs += [json.dumps(m, ensure_ascii=rng.random() < 0.5).encode() for m in rng.sample(mutated, 40)]
    return inputs


INPUTS = all_inputs()


# ---- the tests --------------------------------------------------------------------


def test_the_fast_parser_agrees_with_parse_event_on_every_input():
    assert len(INPUTS) > 5_000
    disagreements, fell_back = [], []
    accepted = 0
    for i, raw in enumerate(INPUTS):
        expected, got = outcome(parse_event, raw), outcome(parse_event_fast, raw)
        if expected != got:
            disagreements.append((i, repr(raw)[:300], expected[:2], got[:2]))
        if expected[0] == "event":
            accepted += 1
            # a valid event never needs the fall-back: the fast path must take it itself
            if type(raw) is bytes and outcome(event_fast._fast, raw)[0] != "event":
                fell_back.append((i, repr(raw)[:300]))
    assert not disagreements, f"{len(disagreements)} disagreements, e.g. {disagreements[:3]}"
    assert accepted > 1_000  # the generated inputs are not (nearly) all refused
    assert not fell_back, f"{len(fell_back)} valid events fell back to parse_event, e.g. {fell_back[:3]}"


def test_every_valid_benchmark_event_takes_the_fast_path():
    items = payloads(plan("fast", 2_000, SEED), SEED, list(TEXTS))
    refused = 0
    for _, raw in items:
        try:
            parse_event(raw)
        except InvalidEventError:
            refused += 1
            continue
        assert event_fast._fast(raw) is not None, raw
    assert 0 < refused < 100  # the benchmark's ~2 % invalid: the only fall-backs


def test_quick_checks_match_their_validators():
    """A quick check in event_fast was written against a validator's source: if that changed,
    read the validator again, fix the check in _QUICK_CHECKS and update its hash."""
    assert event_fast.STALE_QUICK_CHECKS == []


@pytest.mark.parametrize("raw", [json.dumps(make_event(1)).encode(), json.dumps(make_event(2))])
def test_the_event_is_the_pydantic_one(raw):
    expected, got = parse_event(raw), parse_event_fast(raw)
    assert got == expected and type(got) is FeedbackEvent
    assert got.model_fields_set == expected.model_fields_set
    assert got.input.__pydantic_extra__ is None and got.input.__pydantic_private__ is None
    assert got.model_copy(update={"source": "x"}).source == "x"  # a real, usable model


def test_copy_with_is_model_copy():
    rng = random.Random(SEED)
    events = [o[1] for o in map(outcome, [parse_event] * 3000, INPUTS[-3000:]) if o[0] == "event"]
    assert len(events) > 300
    for event in events:
        updates = [
            {},
            {"source": "x"},
            {"subject_id": rng.choice([None, "pseudonym"])},
            {"input": copy_with(event.input, {"text": "masked"})},
            {"model_version": "2", "prediction": None, "not_a_field": 1},
        ]
        for update in updates:
            expected, got = event.model_copy(update=update), copy_with(event, update)
            assert (got, repr(got), got.__dict__) == (expected, repr(expected), expected.__dict__)
            assert got.model_fields_set == expected.model_fields_set
            assert got.model_fields_set is not event.model_fields_set
            assert (got.__pydantic_extra__, got.__pydantic_private__) == (None, None)


def test_the_mirror_of_the_contract_is_built():
    """If this fails, FeedbackEvent changed in a way event_fast cannot mirror yet: the stream
    job still works (parse_event_fast is parse_event) but lost its fast path."""
    assert event_fast.UNAVAILABLE is None
