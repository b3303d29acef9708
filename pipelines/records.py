"""Per-record logic of the stream job, as plain functions (unit-tested without a JVM).

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

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from flywheel.errors import FlywheelError, InvalidEventError
from flywheel.events import (
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    SCHEMA_INVALID,
    TOO_LARGE,
    FeedbackEvent,
    parse_event,
)
from flywheel.privacy import pseudonym
from pipelines.pii import mask_pii

__all__ = [
    "CLEAN",
    "DLQ",
    "REVIEW",
    "DlqRecord",
    "DuplicateRecord",
    "Origin",
    "RawCopy",
    "RecordError",
    "RoutedRecord",
    "Routing",
    "clean_event",
    "dlq_record",
    "mask_pii",
    "normalise_text",
    "origin_of",
    "process_raw",
    "route",
    "route_raw",
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


_R = TypeVar("_R")


class RecordError(FlywheelError):
    """A record of an output topic is not what the stream job writes (``from_json``)."""


_KINDS = {
    "a string": lambda v: isinstance(v, str),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "true or false": lambda v: isinstance(v, bool),
    "an object": lambda v: isinstance(v, dict),
    "a list": lambda v: isinstance(v, list),
}


def _get(data: dict[str, Any], path: str, kind: str, optional: bool = False) -> Any:
    """``data``'s field named by the last part of ``path``, checked to be ``kind`` (or null/absent
    when ``optional``); RecordError naming ``path`` otherwise."""
    value = data.get(path.rpartition(".")[2])
    if value is None and optional:
        return None
    if value is None:
        raise RecordError(f"{path} is missing")
    if not _KINDS[kind](value):
        raise RecordError(f"{path} must be {kind}, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _parse(value: bytes | str, what: str, build: Callable[[dict[str, Any]], _R]) -> _R:
    """``build`` applied to the JSON object in ``value``; RecordError saying it is not ``what``
    and why, if it is not."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise RecordError(f"not a {what}: unreadable as UTF-8 JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise RecordError(f"not a {what}: a JSON {type(data).__name__}, not an object")
    try:
        return build(data)
    except RecordError as exc:
        raise RecordError(f"not a {what}: {exc}") from exc


@dataclass(frozen=True)
class Origin:
    """The raw record an output record came from."""

    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Origin:
        return cls(
            _get(data, "origin.topic", "a string"),
            _get(data, "origin.partition", "an integer"),
            _get(data, "origin.offset", "an integer"),
        )


def origin_of(value: bytes | str) -> Origin:
    """The origin of any output record (routed, DLQ or duplicate): all four topics name it."""
    return _parse(value, "stream output record", lambda d: Origin.from_dict(_get(d, "origin", "an object")))


@dataclass(frozen=True)
class Routing:
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


def _timestamp(stamp: str) -> datetime:
    try:
        when = datetime.fromisoformat(stamp.upper())
    except ValueError as exc:
        raise RecordError(f"event.event_time {stamp[:40]!r} is not an RFC 3339 timestamp") from exc
    if when.tzinfo is None:
        raise RecordError(f"event.event_time {stamp[:40]!r} has no UTC offset")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class RoutedRecord:
    """What the stream job writes to the clean and review topics (one owner: this class).

    ``event`` is the cleaned event as JSON data (``FeedbackEvent.to_json_dict``; treat it as
    read-only). ``from_json`` checks the shape the accessors rely on; it does not validate the
    event against the contract again: that happened once, before cleaning, and masking may
    lengthen a short field past a contract cap.
    """

    event: dict[str, Any]
    label: str | None  # the verified label (explicit, or an accepted prediction)
    low_confidence: bool
    pii_masks: int
    origin: Origin
    text_truncated: bool = False
    flag: str | None = None  # why the label screen sent this sample to review (training.label_screen)

    @classmethod
    def of(
        cls,
        event: FeedbackEvent,
        low_confidence: bool,
        pii_masks: int,
        origin: Origin,
        text_truncated: bool = False,
    ) -> RoutedRecord:
        data = event.to_json_dict()
        return cls(data, event.verified_label, low_confidence, pii_masks, origin, text_truncated)

    def to_json(self) -> str:
        data = {
            "event": self.event,
            "label": self.label,
            "low_confidence": self.low_confidence,
            "pii_masks": self.pii_masks,
            "origin": self.origin.as_dict(),
        }
        if self.text_truncated:
            data["text_truncated"] = True
        if self.flag:
            data["flag"] = self.flag
        return _dumps(data)

    @classmethod
    def from_json(cls, value: bytes | str) -> RoutedRecord:
        """Parse a clean/review record; RecordError saying what is wrong if it is not one."""
        return _parse(value, "routed record", cls._from_data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> RoutedRecord:
        event = _get(data, "event", "an object")
        for name in ("event_id", "event_time", "source", "model_name", "task", "label_source"):
            _get(event, f"event.{name}", "a string")
        _get(event, "event.model_version", "a string", optional=True)
        given = _get(event, "event.input", "an object")
        _get(given, "event.input.text", "a string", optional=True)
        _get(given, "event.input.image_png_b64", "a string", optional=True)
        prediction = _get(event, "event.prediction", "an object", optional=True) or {}
        _get(prediction, "event.prediction.label", "a string", optional=True)
        _get(prediction, "event.prediction.confidence", "a number", optional=True)
        _get(prediction, "event.prediction.image_png_b64", "a string", optional=True)
        feedback = _get(event, "event.feedback", "an object", optional=True) or {}
        _get(feedback, "event.feedback.target_png_b64", "a string", optional=True)
        _timestamp(event["event_time"])
        return cls(
            event,
            _get(data, "label", "a string", optional=True),
            _get(data, "low_confidence", "true or false"),
            _get(data, "pii_masks", "an integer"),
            Origin.from_dict(_get(data, "origin", "an object")),
            bool(_get(data, "text_truncated", "true or false", optional=True)),
            _get(data, "flag", "a string", optional=True),
        )

    # ---- typed accessors of the event ----------------------------------------------

    @property
    def event_id(self) -> str:
        return self.event["event_id"]

    @property
    def subject(self) -> str | None:
        """The subject's pseudonym (``flywheel.privacy``), if the event named one."""
        value = self.event.get("subject_id")
        return value if isinstance(value, str) else None

    @property
    def event_time(self) -> datetime:
        """In UTC (``from_json`` checked it parses)."""
        return _timestamp(self.event["event_time"])

    @property
    def model_name(self) -> str:
        return self.event["model_name"]

    @property
    def model_version(self) -> str | None:
        return self.event.get("model_version")

    @property
    def task(self) -> str:
        return self.event["task"]

    @property
    def source(self) -> str:
        return self.event["source"]

    @property
    def label_source(self) -> str:
        return self.event["label_source"]

    @property
    def text(self) -> str | None:
        return self.event["input"].get("text")

    @property
    def image_png_b64(self) -> str | None:
        return self.event["input"].get("image_png_b64")

    @property
    def prediction(self) -> dict[str, Any] | None:
        """The model's answer as JSON data (``label`` and ``confidence``, or ``image_png_b64``)."""
        return self.event.get("prediction")

    @property
    def prediction_label(self) -> str | None:
        return (self.prediction or {}).get("label")

    @property
    def prediction_png_b64(self) -> str | None:
        return (self.prediction or {}).get("image_png_b64")

    @property
    def target_png_b64(self) -> str | None:
        """The image this event vouches for: the feedback's target, or an accepted prediction."""
        feedback = self.event.get("feedback") or {}
        if feedback.get("target_png_b64") is not None:
            return feedback["target_png_b64"]
        return self.prediction_png_b64 if feedback.get("accepted") is True else None

    @property
    def confidence(self) -> float | None:
        value = (self.prediction or {}).get("confidence")
        return None if value is None else float(value)

    @property
    def prediction_id(self) -> str | None:
        value = self.event.get("prediction_id")
        return value if isinstance(value, str) else None

    def with_prediction(self, model_version: str, prediction: dict[str, Any]) -> RoutedRecord:
        """This record joined to the served prediction its ``prediction_id`` names (the live
        ledger's join): the version that answered and its answer, as the prediction log has
        them, replace what the event claims. An ``accepted`` feedback now vouches for the
        joined label."""
        event = {**self.event, "model_version": model_version, "prediction": dict(prediction)}
        label = self.label
        feedback = event.get("feedback") or {}
        if feedback.get("accepted") is True:
            label = event["prediction"].get("label")
        return RoutedRecord(
            event, label, self.low_confidence, self.pii_masks, self.origin, self.text_truncated
        )

    def answer_only(self) -> RoutedRecord:
        """This record without its input (what judging another prediction of it needs)."""
        event = {**self.event, "input": {}}
        return RoutedRecord(
            event, self.label, self.low_confidence, self.pii_masks, self.origin, self.text_truncated
        )

    @property
    def given_target_png_b64(self) -> str | None:
        """The target image the feedback itself gives (not an accepted prediction)."""
        value = (self.event.get("feedback") or {}).get("target_png_b64")
        return value if isinstance(value, str) else None

    @property
    def accepted(self) -> bool | None:
        """The feedback's verdict on the prediction (``accepted``), if it gave one."""
        value = (self.event.get("feedback") or {}).get("accepted")
        return value if isinstance(value, bool) else None


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


@dataclass(frozen=True)
class RawCopy:
    """What the DLQ keeps of the raw bytes: size, sha256, and a PII-masked text of the head
    (only ``size`` when even building the DLQ record failed)."""

    size: int
    sha256: str | None = None
    truncated: bool | None = None
    utf8: bool | None = None
    pii_masks: int | None = None
    text: str | None = None

    @classmethod
    def of(cls, value: bytes, max_bytes: int) -> RawCopy:
        text, utf8, masks = masked_head(value, max_bytes)
        digest = hashlib.sha256(value).hexdigest()
        return cls(len(value), digest, len(value) > max_bytes, utf8, masks, text)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RawCopy:
        return cls(
            _get(data, "raw.size", "an integer"),
            _get(data, "raw.sha256", "a string", optional=True),
            _get(data, "raw.truncated", "true or false", optional=True),
            _get(data, "raw.utf8", "true or false", optional=True),
            _get(data, "raw.pii_masks", "an integer", optional=True),
            _get(data, "raw.text", "a string", optional=True),
        )


@dataclass(frozen=True)
class DlqRecord:
    """What the stream job writes to the dead-letter topic (one owner: this class): the reason
    (``code``, ``message``, ``problems`` as (field, message) pairs), the origin, the record's
    key and a copy of its raw bytes."""

    code: str
    message: str
    origin: Origin
    problems: tuple[tuple[str, str], ...] = ()
    problems_total: int = 0
    key: str | None = None
    raw: RawCopy | None = None

    def to_json(self) -> str:
        reason = {
            "code": self.code,
            "message": self.message,
            "problems": [{"field": f, "message": m} for f, m in self.problems],
            "problems_total": self.problems_total,
        }
        raw = None if self.raw is None else self.raw.as_dict()
        return _encodable(
            _dumps({"reason": reason, "origin": self.origin.as_dict(), "key": self.key, "raw": raw})
        )

    @classmethod
    def from_json(cls, value: bytes | str) -> DlqRecord:
        """Parse a DLQ record; RecordError saying what is wrong if it is not one."""
        return _parse(value, "DLQ record", cls._from_data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> DlqRecord:
        reason = _get(data, "reason", "an object")
        code, message = _get(reason, "reason.code", "a string"), _get(reason, "reason.message", "a string")
        problems = []
        for problem in _get(reason, "reason.problems", "a list"):
            if not isinstance(problem, dict):
                raise RecordError(f"reason.problems holds {type(problem).__name__}, not an object")
            field = _get(problem, "reason.problems[].field", "a string")
            problems.append((field, _get(problem, "reason.problems[].message", "a string")))
        raw = _get(data, "raw", "an object", optional=True)
        return cls(
            code,
            message,
            Origin.from_dict(_get(data, "origin", "an object")),
            tuple(problems),
            _get(reason, "reason.problems_total", "an integer"),
            _get(data, "key", "a string", optional=True),
            None if raw is None else RawCopy.from_dict(raw),
        )


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

    record = DlqRecord(
        error.code,
        masked(str(error), _MAX_MESSAGE_CHARS * 4),
        origin,
        tuple(
            (masked(f, _MAX_FIELD_CHARS), masked(m, _MAX_MESSAGE_CHARS))
            for f, m in error.problems[:_MAX_PROBLEMS]
        ),
        len(error.problems),
        None if key is None else masked_head(bytes(key), 256)[0],
        None if value is None else RawCopy.of(bytes(value), max_raw_bytes),
    )
    text = record.to_json()
    while len(text.encode("utf-8")) > MAX_RECORD_BYTES // 2 and record.raw and record.raw.text:
        raw, raw_text = record.raw, record.raw.text
        record = replace(record, raw=replace(raw, text=raw_text[: len(raw_text) // 2]))  # escapes grew it
        text = record.to_json()
    return text


@dataclass(frozen=True)
class DuplicateRecord:
    """What the stream job writes to the duplicates topic: an event_id seen before, and where."""

    event_id: str
    origin: Origin

    def to_json(self) -> str:
        return _dumps({"event_id": self.event_id, "origin": self.origin.as_dict()})

    @classmethod
    def from_json(cls, value: bytes | str) -> DuplicateRecord:
        return _parse(value, "duplicate record", cls._from_data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> DuplicateRecord:
        return cls(_get(data, "event_id", "a string"), Origin.from_dict(_get(data, "origin", "an object")))


def pseudonymised(event: FeedbackEvent, subject_key: bytes | None) -> FeedbackEvent:
    """``event`` with its ``subject_id`` replaced by the pseudonym (``flywheel.privacy``);
    without a key the subject is dropped, never stored as it came."""
    if event.subject_id is None:
        return event
    stored = pseudonym(subject_key, event.subject_id) if subject_key else None
    return event.model_copy(update={"subject_id": stored})


def _route_valid(
    value: bytes | None,
    thresholds: dict[str, float],
    default_threshold: float,
    origin: Origin,
    subject_key: bytes | None = None,
) -> Routing:
    if value is None:
        raise InvalidEventError(EMPTY, [("", "record has no value (tombstone)")])
    event = pseudonymised(parse_event(bytes(value)), subject_key)
    event, masks, truncated = clean_event(event)
    destination, low = route(event, thresholds.get(event.model_name, default_threshold))
    record = RoutedRecord.of(event, low, masks, origin, truncated).to_json()
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
        error = InvalidEventError(INTERNAL_ERROR, [("", f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE_CHARS])])
    try:
        return Routing(DLQ, dlq_record(value, key, error, origin, max_dlq_raw_bytes))
    except Exception as exc:  # noqa: BLE001 - even the DLQ record failed: keep the bare facts
        message = f"{error.code}; then building the DLQ record failed: {type(exc).__name__}: {exc}"
        raw = None if value is None else RawCopy(len(value))
        return Routing(
            DLQ, DlqRecord(INTERNAL_ERROR, message[:_MAX_MESSAGE_CHARS], origin, raw=raw).to_json()
        )


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
    return out.destination, out.event_id, out.record, DuplicateRecord(out.event_id, origin).to_json()
