"""Per-record logic of the stream job, as plain functions (unit-tested without a JVM).

The PyFlink job (``pipelines.stream_job``) only wires these together:

    raw bytes ─ process_raw ─┬─ DLQ ─────────────────────────────► dlq_record → <prefix>.dlq
      (parse + validate once,└─ REVIEW | CLEAN (routed record) ─ dedupe by event_id ─┐
       normalise, mask, route)                                                         │
                       first time: → <prefix>.review | <prefix>.clean ◄────────────────┤
                       seen before: duplicate_record → <prefix>.duplicates ◄───────────┘

Every record that enters ``raw`` leaves through exactly one of those four topics,
whatever its bytes: ``process_raw`` never raises. An event the contract rejects goes to
the DLQ with its reason code; an exception nobody expected becomes a DLQ record with code
``internal_error`` (the exception's type and message), so one poison record can never
stop or stall the job.

Size caps hold after cleaning: text is NFKC-normalised and PII-masked, which can make it
longer (one character can expand to 18 under NFKC; ``a@b.cc`` becomes ``[EMAIL]``). Text
that grows past ``MAX_TEXT_CHARS`` is truncated to it and the routed record says
``"text_truncated": true`` (the label is still worth keeping; nothing is silently cut).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from flywheel.errors import InvalidEventError
from flywheel.events import (
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    SCHEMA_INVALID,
    TOO_LARGE,
    FeedbackEvent,
    parse_event,
)
from pipelines.pii import mask_pii

__all__ = [
    "CLEAN",
    "DLQ",
    "REVIEW",
    "Origin",
    "Outcome",
    "clean_event",
    "dlq_record",
    "duplicate_record",
    "mask_pii",
    "normalise_text",
    "process_raw",
    "route",
]

REVIEW, CLEAN, DLQ = "review", "clean", "dlq"
INTERNAL_ERROR = "internal_error"
EMPTY = "empty"
DEFAULT_DLQ_RAW_BYTES = 64 * 1024  # settings.stream.dlq_max_raw_bytes (at most 128 KiB)
_MAX_PROBLEMS, _MAX_FIELD_CHARS, _MAX_MESSAGE_CHARS = 20, 200, 500

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def normalise_text(text: str) -> str:
    """Unicode NFKC, control characters dropped, runs of whitespace collapsed to one space."""
    return " ".join(_CONTROL.sub("", unicodedata.normalize("NFKC", text)).split())


# ---- records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True)
class Outcome:
    """What ``process_raw`` decided for one raw record.

    ``destination`` is DLQ, REVIEW or CLEAN; ``record`` is the JSON to write there (for
    REVIEW/CLEAN, unless the dedupe step finds ``event_id`` was seen before).
    """

    destination: str
    record: str
    event_id: str | None = None


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates from a hostile JSON key
    quoted back in a reason) replaced, so the Kafka sink can always serialise it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def clean_event(event: FeedbackEvent) -> tuple[FeedbackEvent, int, bool]:
    """Normalise and mask the free text; return (event, mask count, text truncated).

    Raises InvalidEventError when nothing visible is left of the text.
    """
    update, count = _masked_fields(event)
    if event.input.text is None:
        return (event.model_copy(update=update) if update else event), count, False
    masked, text_count = mask_pii(normalise_text(event.input.text))
    count += text_count
    if not masked:
        raise InvalidEventError(
            SCHEMA_INVALID, [("input.text", "has no visible characters after normalisation")]
        )
    truncated = len(masked) > MAX_TEXT_CHARS
    if truncated:
        masked = masked[:MAX_TEXT_CHARS]
    # model_copy skips validation on purpose: the event was validated once, and the only
    # change is the cleaned text, whose invariants (non-empty, capped) hold by construction.
    update["input"] = event.input.model_copy(update={"text": masked})
    return event.model_copy(update=update), count, truncated


def _masked_fields(event: FeedbackEvent) -> tuple[dict[str, Any], int]:
    """Masks for the short free-form fields (source, model_version, labels): PII has no
    business there, and a label that is an e-mail must not reach the feature store."""
    update: dict[str, Any] = {}
    count = 0
    for name in ("source", "model_version"):
        value = getattr(event, name)
        if value is not None:
            masked, n = mask_pii(value)
            if n:
                update[name], count = masked, count + n
    for part in ("prediction", "feedback"):
        obj = getattr(event, part)
        if obj is not None and obj.label is not None:
            masked, n = mask_pii(obj.label)
            if n:
                update[part], count = obj.model_copy(update={"label": masked}), count + n
    return update, count


def route(event: FeedbackEvent, threshold: float) -> tuple[str, bool]:
    """(destination, low_confidence). No verified answer and confidence < threshold → review."""
    confidence = event.prediction.confidence if event.prediction else None
    low = confidence is not None and confidence < threshold
    return (REVIEW if low and not event.has_verified_answer else CLEAN), low


def routed_record(
    event: FeedbackEvent, low_confidence: bool, pii_masks: int, origin: Origin, text_truncated: bool = False
) -> str:
    """The JSON written to the clean and review topics."""
    data = {
        "event": event.to_json_dict(),
        "label": event.verified_label,
        "low_confidence": low_confidence,
        "pii_masks": pii_masks,
        "origin": origin.as_dict(),
    }
    if text_truncated:
        data["text_truncated"] = True
    return _dumps(data)


_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": " ", "f": " ", "n": "\n", "r": "\r", "t": "\t"}
_MASK_MARGIN = 512  # characters masked past a cut, so PII straddling it is masked whole


def _unescape(text: str) -> str:
    """JSON escapes decoded (``\\n`` → newline, ``\\u00a0`` → NBSP), so PII written through
    escapes is seen by the masker as the reader of the JSON would see it."""

    def decode(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return _SIMPLE_ESCAPES[m.group(2)]
        char = chr(int(m.group(1), 16))
        return "\ufffd" if "\ud800" <= char <= "\udfff" else char

    return _JSON_ESCAPE.sub(decode, text) if "\\" in text else text


def masked_prefix(text: str, max_chars: int) -> tuple[str, int]:
    """(the first ``max_chars`` of ``text`` PII-masked, masks): JSON escapes decoded, and
    masked with a margin past the cut, so PII straddling the cut is masked whole."""
    masked, masks = mask_pii(_unescape(text[: max_chars + _MASK_MARGIN]))
    return masked[:max_chars], masks


def masked_head(data: bytes, max_chars: int) -> tuple[str, bool, int]:
    """(PII-masked text of the head of ``data``, whether it is valid UTF-8, masks); invalid
    bytes appear as ``\\xNN``."""
    head = data[: max_chars + _MASK_MARGIN]
    try:
        text, utf8 = head.decode("utf-8"), True
    except UnicodeDecodeError as exc:
        # a cut through a multi-byte character does not make the bytes non-UTF-8
        cut = len(data) > len(head) and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
        text, utf8 = head.decode("utf-8", "backslashreplace"), cut
    masked, masks = masked_prefix(text, max_chars)
    return masked, utf8, masks


def _raw_copy(value: bytes | None, max_bytes: int) -> dict[str, Any] | None:
    """What the DLQ keeps of the raw bytes: size, sha256, and a PII-masked text of the head."""
    if value is None:
        return None
    text, utf8, masks = masked_head(value, max_bytes)
    return {
        "size": len(value),
        "sha256": hashlib.sha256(value).hexdigest(),
        "truncated": len(value) > max_bytes,
        "utf8": utf8,
        "pii_masks": masks,
        "text": text,
    }


def dlq_record(
    value: bytes | None,
    key: bytes | None,
    error: InvalidEventError,
    origin: Origin,
    max_raw_bytes: int = DEFAULT_DLQ_RAW_BYTES,
) -> str:
    """The JSON written to the dead-letter topic: reason, where it came from, the raw record.

    The raw record is kept as PII-masked text (people read the DLQ), JSON escapes decoded,
    cut to ``max_raw_bytes`` characters with its full size and sha256; non-UTF-8 bytes
    appear as ``\\xNN``. Reasons are masked and capped too, and the record is shrunk until it
    fits MAX_RECORD_BYTES, so the DLQ sink can always write it.
    """

    def masked(text: str, limit: int) -> str:
        return masked_prefix(text, limit)[0]

    problems = [
        {"field": masked(f, _MAX_FIELD_CHARS), "message": masked(m, _MAX_MESSAGE_CHARS)}
        for f, m in error.problems[:_MAX_PROBLEMS]
    ]
    data = {
        "reason": {
            "code": error.code,
            "message": masked(str(error), _MAX_MESSAGE_CHARS * 4),
            "problems": problems,
            "problems_total": len(error.problems),
        },
        "origin": origin.as_dict(),
        "key": None if key is None else masked_head(bytes(key), 256)[0],
        "raw": _raw_copy(None if value is None else bytes(value), max_raw_bytes),
    }
    record = _encodable(_dumps(data))
    while len(record.encode("utf-8")) > MAX_RECORD_BYTES // 2 and data["raw"] and data["raw"]["text"]:
        data["raw"]["text"] = data["raw"]["text"][: len(data["raw"]["text"]) // 2]  # escapes grew it
        record = _encodable(_dumps(data))
    return record


def duplicate_record(event_id: str, origin: Origin) -> str:
    return _dumps({"event_id": event_id, "origin": origin.as_dict()})


def _route_valid(
    value: bytes | None, thresholds: dict[str, float], default_threshold: float, origin: Origin
) -> Outcome:
    if value is None:
        raise InvalidEventError(EMPTY, [("", "record has no value (tombstone)")])
    event = parse_event(bytes(value))
    event, masks, truncated = clean_event(event)
    destination, low = route(event, thresholds.get(event.model_name, default_threshold))
    record = routed_record(event, low, masks, origin, truncated)
    if len(record.encode("utf-8")) > MAX_RECORD_BYTES:
        raise InvalidEventError(TOO_LARGE, [("", f"the routed record exceeds {MAX_RECORD_BYTES} bytes")])
    return Outcome(destination, record, event.event_id)


def process_raw(
    value: bytes | None,
    key: bytes | None,
    origin: Origin,
    thresholds: dict[str, float] | None = None,
    default_threshold: float = 0.5,
    max_dlq_raw_bytes: int = DEFAULT_DLQ_RAW_BYTES,
) -> Outcome:
    """Decide where one raw record goes; never raises.

    A valid event comes back parsed and validated once, normalised, PII-masked and routed
    (REVIEW or CLEAN with its routed record), so what is keyed and stored downstream never
    holds raw PII. Anything else is a DLQ outcome with a reason code.
    """
    try:
        return _route_valid(value, thresholds or {}, default_threshold, origin)
    except InvalidEventError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - no record may stop the job: it goes to the DLQ
        error = InvalidEventError(INTERNAL_ERROR, [("", f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE_CHARS])])
    try:
        return Outcome(DLQ, dlq_record(value, key, error, origin, max_dlq_raw_bytes))
    except Exception as exc:  # noqa: BLE001 - even the DLQ record failed: keep the bare facts
        return Outcome(
            DLQ,
            _dumps(
                {
                    "reason": {
                        "code": INTERNAL_ERROR,
                        "message": f"{error.code}; then building the DLQ record failed: "
                        f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE_CHARS],
                        "problems": [],
                        "problems_total": 0,
                    },
                    "origin": origin.as_dict(),
                    "key": None,
                    "raw": None if value is None else {"size": len(value)},
                }
            ),
        )
