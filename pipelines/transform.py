"""The stream job's transform, as plain functions (unit-tested without a JVM).

The PyFlink job (``pipelines.stream_job``) only wires these together:

    raw bytes ─ process_raw ─┬─ DLQ ─────────────────────────────► dlq_record → <prefix>.dlq
      (parse + validate once,└─ REVIEW | CLEAN (routed record) ─ dedupe by event_id ─┐
       normalise, mask, route)                                                         │
                       first time: → <prefix>.review | <prefix>.clean ◄────────────────┤
                       seen before: DuplicateRecord → <prefix>.duplicates ◄────────────┘

Every record that enters ``raw`` leaves through exactly one of those four topics,
whatever its bytes: ``process_raw`` never raises. An event the contract rejects goes to
the DLQ with its reason code; an exception nobody expected becomes a DLQ record with code
``internal_error`` (the exception's type and message), so one poison record can never
stop or stall the job.

Size caps hold after cleaning: text is NFKC-normalised and PII-masked, which can make it
longer (one character can expand to 18 under NFKC; ``a@b.cc`` becomes ``[EMAIL]``). Text
that grows past ``MAX_TEXT_CHARS`` is truncated to it and the routed record says
``"text_truncated": true`` (the label is still worth keeping; nothing is silently cut).

The records of the output topics are typed here and only here, built and parsed by
``RoutedRecord`` (clean and review), ``DlqRecord`` and ``DuplicateRecord`` (``to_json`` /
``from_json``, which raises RecordError saying what is wrong); ``origin_of`` reads the
origin any of them names. Consumers never index the JSON by hand.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from flywheel.errors import InvalidEventError
from flywheel.event_fast import copy_with, parse_event_fast
from flywheel.events import (
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    SCHEMA_INVALID,
    TOO_LARGE,
    FeedbackEvent,
)
from flywheel.privacy import pseudonym
from pipelines.dlq import DEFAULT_DLQ_RAW_BYTES, MAX_MESSAGE_CHARS, DlqRecord, RawCopy, dlq_record
from pipelines.fast_record import duplicate_record_json, routed_record_json
from pipelines.pii import mask_pii
from pipelines.records import CLEAN, DLQ, REVIEW, Origin

INTERNAL_ERROR = "internal_error"
EMPTY = "empty"

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def normalise_text(text: str) -> str:
    """Unicode NFKC, control characters dropped, runs of whitespace collapsed to one space."""
    if text.isascii() and text.isprintable():  # most feedback: NFKC and the control filter change nothing
        return " ".join(text.split())
    return " ".join(_CONTROL.sub("", unicodedata.normalize("NFKC", text)).split())


@dataclass(frozen=True)
class Routing:
    """What ``process_raw`` decided for one raw record.

    ``destination`` is DLQ, REVIEW or CLEAN; ``record`` is the JSON to write there (for
    REVIEW/CLEAN, unless the dedupe step finds ``event_id`` was seen before).
    """

    destination: str
    record: str
    event_id: str | None = None


def clean_event(event: FeedbackEvent) -> tuple[FeedbackEvent, int, bool]:
    """Normalise and mask the free text; return (event, mask count, text truncated).

    Raises InvalidEventError when nothing visible is left of the text.
    """
    update, count = _masked_fields(event)
    if event.input.text is None:
        return (copy_with(event, update) if update else event), count, False
    masked, text_count = mask_pii(normalise_text(event.input.text))
    count += text_count
    if not masked:
        raise InvalidEventError(
            SCHEMA_INVALID, [("input.text", "has no visible characters after normalisation")]
        )
    truncated = len(masked) > MAX_TEXT_CHARS
    if truncated:
        masked = masked[:MAX_TEXT_CHARS]
    # copy_with (model_copy, cheaper) skips validation on purpose: the event was validated once,
    # and the only change is the cleaned text, whose invariants (non-empty, capped) hold by construction.
    update["input"] = copy_with(event.input, {"text": masked})
    return copy_with(event, update), count, truncated


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
                update[part], count = copy_with(obj, {"label": masked}), count + n
    return update, count


def route(event: FeedbackEvent, threshold: float) -> tuple[str, bool]:
    """(destination, low_confidence). No verified answer and confidence < threshold → review."""
    confidence = event.prediction.confidence if event.prediction else None
    low = confidence is not None and confidence < threshold
    return (REVIEW if low and not event.has_verified_answer else CLEAN), low


def pseudonymised(event: FeedbackEvent, subject_key: bytes | None) -> FeedbackEvent:
    """``event`` with its ``subject_id`` replaced by the pseudonym (``flywheel.privacy``);
    without a key the subject is dropped, never stored as it came."""
    if event.subject_id is None:
        return event
    stored = pseudonym(subject_key, event.subject_id) if subject_key else None
    return copy_with(event, {"subject_id": stored})


def _route_valid(
    value: bytes | None,
    thresholds: dict[str, float],
    default_threshold: float,
    origin: Origin,
    subject_key: bytes | None = None,
) -> Routing:
    if value is None:
        raise InvalidEventError(EMPTY, [("", "record has no value (tombstone)")])
    event = pseudonymised(parse_event_fast(bytes(value)), subject_key)
    event, masks, truncated = clean_event(event)
    destination, low = route(event, thresholds.get(event.model_name, default_threshold))
    record = routed_record_json(event, low, masks, origin, truncated)
    if len(record.encode("utf-8")) > MAX_RECORD_BYTES:
        raise InvalidEventError(TOO_LARGE, [("", f"the routed record exceeds {MAX_RECORD_BYTES} bytes")])
    return Routing(destination, record, event.event_id)


def process_raw(
    value: bytes | None,
    key: bytes | None,
    origin: Origin,
    thresholds: dict[str, float] | None = None,
    default_threshold: float = 0.5,
    max_dlq_raw_bytes: int = DEFAULT_DLQ_RAW_BYTES,
    subject_key: bytes | None = None,
) -> Routing:
    """Decide where one raw record goes; never raises.

    A valid event comes back parsed and validated once, normalised, PII-masked and routed
    (REVIEW or CLEAN with its routed record), so what is keyed and stored downstream never
    holds raw PII. Anything else is a DLQ outcome with a reason code.
    """
    try:
        return _route_valid(value, thresholds or {}, default_threshold, origin, subject_key)
    except InvalidEventError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - no record may stop the job: it goes to the DLQ
        error = InvalidEventError(INTERNAL_ERROR, [("", f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS])])
    try:
        return Routing(DLQ, dlq_record(value, key, error, origin, max_dlq_raw_bytes))
    except Exception as exc:  # noqa: BLE001 - even the DLQ record failed: keep the bare facts
        message = f"{error.code}; then building the DLQ record failed: {type(exc).__name__}: {exc}"
        raw = None if value is None else RawCopy(len(value))
        return Routing(DLQ, DlqRecord(INTERNAL_ERROR, message[:MAX_MESSAGE_CHARS], origin, raw=raw).to_json())


def route_raw(
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    thresholds: dict[str, float] | None = None,
    default_threshold: float = 0.5,
    max_dlq_raw_bytes: int = DEFAULT_DLQ_RAW_BYTES,
    subject_key: bytes | None = None,
) -> tuple[str, str | None, str, str | None]:
    """The stream job's one Python step: ``process_raw`` as flat values,
    (destination, event_id, record, the duplicate record to write if ``event_id`` was seen
    before); never raises."""
    origin = Origin(topic, partition, offset)
    out = process_raw(value, key, origin, thresholds, default_threshold, max_dlq_raw_bytes, subject_key)
    if out.destination == DLQ or out.event_id is None:
        return out.destination, None, out.record, None
    return out.destination, out.event_id, out.record, duplicate_record_json(out.event_id, origin)
