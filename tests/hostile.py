"""A corpus of hostile and malformed raw records, each with where it must end up.

Used by the unit test (``process_raw`` alone) and the integration test (the real job on a
real broker). ``HOSTILE`` is a list of ``Case(kind, key, value, destination, code)``:
destination is dlq/clean/review/duplicates, code the DLQ reason code (None otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flywheel.events import MAX_EVENT_BYTES, MAX_IMAGE_B64_CHARS, MAX_TEXT_CHARS
from tests.helpers import make_event, png_b64


@dataclass(frozen=True)
class Case:
    kind: str
    key: bytes | None
    value: bytes | None
    destination: str
    code: str | None = None


def _event(i: int, **overrides: Any) -> dict[str, Any]:
    return make_event(i, **{"event_id": f"hostile-{i:03d}", **overrides})


def _raw(i: int, **overrides: Any) -> bytes:
    return json.dumps(_event(i, **overrides), ensure_ascii=False).encode("utf-8")


def _raw_text(i: int, replace: tuple[str, str]) -> bytes:
    """An event's JSON with one literal piece of text replaced (for bytes json.dumps won't write)."""
    text = json.dumps(_event(i))
    assert replace[0] in text
    return text.replace(replace[0], replace[1], 1).encode("utf-8")


def _image_input(i: int, image_png_b64: str) -> bytes:
    """An image-restoration event with only an input image (no prediction, no feedback)."""
    return _raw(
        i, task="image-restoration", input={"image_png_b64": image_png_b64}, prediction=None, feedback=None
    )


def _big_png_b64(chars: int) -> str:
    """A valid PNG's base64, padded with a private ancillary chunk ("flYw", which readers skip,
    with its CRC) to at most ``chars`` characters (within 4)."""
    import base64
    import zlib

    png = base64.b64decode(png_b64())
    padding = b"\x00" * ((chars * 3) // 4 - len(png) - 12 - 3)
    crc = zlib.crc32(b"flYw" + padding).to_bytes(4, "big")
    chunk = len(padding).to_bytes(4, "big") + b"flYw" + padding + crc
    return base64.b64encode(png[:-12] + chunk + png[-12:]).decode()


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(kind, value, destination="dlq", code=None, key=None):
        cases.append(
            Case(kind, key if key is not None else f"k-{len(cases)}".encode(), value, destination, code)
        )

    # ---- not JSON at all
    add("not utf-8", b"\xff\xfe\xfd garbage", code="not_utf8")
    add("truncated utf-8 sequence", b'{"a": "\xe2\x82"}', code="not_utf8")
    add("not json", b"{not json", code="not_json")
    add("empty value", b"", code="not_json")
    add("tombstone (no value)", None, code="empty")
    add("json null", b"null", code="schema_invalid")
    add("json array", b"[1, 2, 3]", code="schema_invalid")
    add("json string", b'"hello"', code="schema_invalid")
    add("json number", b"42", code="schema_invalid")
    add("byte order mark", b"\xef\xbb\xbf" + _raw(90), code="not_json")
    add("nested arrays 100k deep", b"[" * 100_000 + b"]" * 100_000, code="too_deep")
    add("nested objects 5k deep", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, code="too_deep")
    add(
        "duplicate keys",
        _raw_text(1, ('"schema_version": 1', '"schema_version": 1, "schema_version": 1')),
        code="duplicate_key",
    )
    add("NaN confidence", _raw_text(2, ('"confidence": 0.9', '"confidence": NaN')), code="not_json")
    add("Infinity confidence", _raw_text(3, ('"confidence": 0.9', '"confidence": Infinity')), code="not_json")
    add(
        "integer past the digit limit",
        _raw_text(4, ('"confidence": 0.9', '"confidence": ' + "9" * 5000)),
        code="not_json",
    )
    add("confidence 1e400", _raw_text(5, ('"confidence": 0.9', '"confidence": 1e400')), code="schema_invalid")
    # ---- the contract
    add("schema_version true", _raw(6, schema_version=True), code="schema_invalid")
    add("schema_version 1.0", _raw(7, schema_version=1.0), code="schema_invalid")
    add("schema_version '1'", _raw(8, schema_version="1"), code="schema_invalid")
    add("missing fields", b'{"schema_version": 1}', code="schema_invalid")
    add("unknown field", _raw(9, extra="x"), code="schema_invalid")
    add("whitespace-only text", _raw(10, input={"text": " \t\n \u3000 "}), code="schema_invalid")
    add("zero-width-only text", _raw(11, input={"text": "\u200b\u200d\ufeff"}), code="schema_invalid")
    add("text over the cap", _raw(12, input={"text": "x" * (MAX_TEXT_CHARS + 1)}), code="schema_invalid")
    add("year 1 with an offset", _raw(13, event_time="0001-01-01T00:00:00+01:00"), code="schema_invalid")
    add("year 9999 with an offset", _raw(14, event_time="9999-12-31T23:59:59-01:00"), code="schema_invalid")
    add("ISO week date", _raw(15, event_time="2026-W01-1T00:00:00Z"), code="schema_invalid")
    add("ISO basic format", _raw(16, event_time="20260101T000000Z"), code="schema_invalid")
    add("no UTC offset", _raw(17, event_time="2026-01-01T00:00:00"), code="schema_invalid")
    add("far future", _raw(18, event_time="2999-01-01T00:00:00Z"), code="schema_invalid")
    add("February 30th", _raw(19, event_time="2026-02-30T00:00:00Z"), code="schema_invalid")
    add("escape sequence in source", _raw(20, source="team\x1b[31mred"), code="schema_invalid")
    add("NUL in label", _raw(21, feedback={"label": "pos\x00itive"}), code="schema_invalid")
    add("model name ..", _raw(22, model_name=".."), code="schema_invalid")
    add("model name with a slash", _raw(23, model_name="../../etc/passwd"), code="schema_invalid")
    add("event_id with a newline", _raw(24, event_id="evt\n1"), code="schema_invalid")
    add(
        "confidence as a string",
        _raw(25, prediction={"label": "a", "confidence": "0.5"}),
        code="schema_invalid",
    )
    add(
        "lone surrogate in text",
        _raw_text(26, ('"sample text number 26"', '"bad \\ud800 text"')),
        code="schema_invalid",
    )
    add("lone surrogate as a key", b'{"\\udfff": 1}', code="schema_invalid")
    add("not base64 image", _image_input(27, "!!!notbase64"), code="schema_invalid")
    add("base64 but not a PNG", _image_input(28, "R0lGODlhAQABAAAAACw="), code="schema_invalid")
    add(
        "invalid, ~990 KB, with PII",
        (b'{"note": "mail me at jane@example.com", "pad": "' + b"x" * 990_000 + b'"}'),
        code="schema_invalid",
    )
    add("over MAX_EVENT_BYTES", b"{" + b" " * MAX_EVENT_BYTES + b"}", code="too_large")
    add("invalid, with a 100 KB key", b"{oops", code="not_json", key=b"K" * 100_000)
    # ---- valid, but built to break what comes after validation
    add("NFKC grows past the cap", _raw(40, input={"text": "\ufdfa" * MAX_TEXT_CHARS}), "clean")
    add("masking grows past the cap", _raw(41, input={"text": "a@b.cc " * (MAX_TEXT_CHARS // 7)}), "clean")
    add(
        "PII behind zero-width characters",
        _raw(42, input={"text": "mail j\u200bane@exam\u00adple.com"}),
        "clean",
    )
    add("control characters in text", _raw(43, input={"text": "ok\x00\x07 then \x1b[2J text"}), "clean")
    add("right-to-left override in text", _raw(44, input={"text": "abc \u202etxet desrever"}), "clean")
    add(
        "emoji and astral characters",
        _raw(45, input={"text": "\U0001f600\U0001f4a9 \U00010348 great"}),
        "clean",
    )
    add("earliest allowed time", _raw(46, event_time="2000-01-01T00:00:00Z"), "clean")
    add("lowercase t and z", _raw(47, event_time="2026-01-01t12:00:00z"), "clean")
    add(
        "low confidence, no label",
        _raw(48, feedback=None, prediction={"label": "neg", "confidence": 0.01}),
        "review",
    )
    add(
        "three maximal images (~790 KB)",
        _raw(
            49,
            task="image-restoration",
            input={"image_png_b64": _big_png_b64(MAX_IMAGE_B64_CHARS)},
            prediction={"image_png_b64": _big_png_b64(MAX_IMAGE_B64_CHARS)},
            feedback={"target_png_b64": _big_png_b64(MAX_IMAGE_B64_CHARS)},
        ),
        "clean",
    )
    add("duplicate of an earlier event", _raw(46, event_time="2000-01-01T00:00:00Z"), "duplicates")
    add("duplicate with other bytes", _raw(47, event_time="2026-01-01T12:00:00Z"), "duplicates")
    return cases


HOSTILE = _cases()
assert all(c.value is None or len(c.value) <= MAX_EVENT_BYTES + 16 for c in HOSTILE)
