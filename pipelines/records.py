"""The records of the stream job's output topics, typed here and only here.

``RoutedRecord`` (clean and review topics) and ``DuplicateRecord`` are built and parsed by
this module (``to_json`` / ``from_json``, which raises RecordError saying what is wrong);
the dead-letter record is ``pipelines.dlq.DlqRecord``; ``origin_of`` reads the origin any
of them names. Consumers never index the JSON by hand. The transform that makes them is
``pipelines.transform``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from flywheel.errors import FlywheelError
from flywheel.events import FeedbackEvent

try:  # a core dependency (pyproject.toml); without it RoutedRecord.from_json takes json.loads only
    import msgspec
except ImportError:  # pragma: no cover - exercised only where msgspec is not installed
    msgspec = None  # type: ignore[assignment]

REVIEW, CLEAN, DLQ = "review", "clean", "dlq"

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


def field_of(data: dict[str, Any], path: str, kind: str, optional: bool = False) -> Any:
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


def parse_record(value: bytes | str, what: str, build: Callable[[dict[str, Any]], _R]) -> _R:
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
            field_of(data, "origin.topic", "a string"),
            field_of(data, "origin.partition", "an integer"),
            field_of(data, "origin.offset", "an integer"),
        )


def origin_of(value: bytes | str) -> Origin:
    """The origin of any output record (routed, DLQ or duplicate): all four topics name it."""
    return parse_record(
        value, "stream output record", lambda d: Origin.from_dict(field_of(d, "origin", "an object"))
    )


def compact_json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


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
        return compact_json(data)

    @classmethod
    def from_json(cls, value: bytes | str) -> RoutedRecord:
        """Parse a clean/review record; RecordError saying what is wrong if it is not one.

        A record as the stream job writes it takes ``_quick_routed`` (msgspec, the same checks
        inline); anything it is unsure of takes ``from_json_checked``, which says what is wrong."""
        return _quick_routed(value) or cls.from_json_checked(value)

    @classmethod
    def from_json_checked(cls, value: bytes | str) -> RoutedRecord:
        """``from_json`` through ``json.loads`` and ``field_of`` (every refusal's message)."""
        return parse_record(value, "routed record", cls._from_data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> RoutedRecord:
        event = field_of(data, "event", "an object")
        for name in ("event_id", "event_time", "source", "model_name", "task", "label_source"):
            field_of(event, f"event.{name}", "a string")
        field_of(event, "event.model_version", "a string", optional=True)
        given = field_of(event, "event.input", "an object")
        field_of(given, "event.input.text", "a string", optional=True)
        field_of(given, "event.input.image_png_b64", "a string", optional=True)
        prediction = field_of(event, "event.prediction", "an object", optional=True) or {}
        field_of(prediction, "event.prediction.label", "a string", optional=True)
        field_of(prediction, "event.prediction.confidence", "a number", optional=True)
        field_of(prediction, "event.prediction.image_png_b64", "a string", optional=True)
        feedback = field_of(event, "event.feedback", "an object", optional=True) or {}
        field_of(feedback, "event.feedback.target_png_b64", "a string", optional=True)
        _timestamp(event["event_time"])
        return cls(
            event,
            field_of(data, "label", "a string", optional=True),
            field_of(data, "low_confidence", "true or false"),
            field_of(data, "pii_masks", "an integer"),
            Origin.from_dict(field_of(data, "origin", "an object")),
            bool(field_of(data, "text_truncated", "true or false", optional=True)),
            field_of(data, "flag", "a string", optional=True),
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


_EVENT_STRINGS = ("event_id", "event_time", "source", "model_name", "task", "label_source")
_decode = msgspec.json.Decoder().decode if msgspec is not None else None


def _absent_or(data: dict[str, Any], name: str, kind: type) -> bool:
    value = data.get(name)
    return value is None or value.__class__ is kind


def _quick_routed(value: bytes | str) -> RoutedRecord | None:
    """``RoutedRecord.from_json(value)`` for a record that passes every check of ``_from_data``,
    else None (the caller then runs ``from_json_checked``, which refuses it with its message).

    msgspec decodes JSON to the same Python objects as ``json.loads`` (dict order, last of a
    repeated key, ints of any size, floats correctly rounded) and refuses more: NaN and
    Infinity, numbers out of range, lone surrogates, a BOM, UTF-16: all of those go the slow
    way. JSON makes exact types, so ``__class__ is`` stands for ``field_of``'s ``isinstance``
    (bool is not int). ``tests/unit/test_records_fast.py`` holds the two to the same objects."""
    if _decode is None or value.__class__ not in (bytes, str):  # json.loads refuses a memoryview
        return None
    if isinstance(value, str):
        opens = value.count("[") + value.count("{")
    else:
        opens = value.count(b"[") + value.count(b"{")
    if opens > 64:
        return None  # possibly nested deeper than json.loads recurses: its answer, not msgspec's
    try:
        data = _decode(value)
    except Exception:  # noqa: BLE001 - msgspec's DecodeError, UnicodeDecodeError...: the slow way says why
        return None
    if data.__class__ is not dict:
        return None
    event = data.get("event")
    if event.__class__ is not dict:
        return None
    for name in _EVENT_STRINGS:
        if event.get(name).__class__ is not str:
            return None
    given = event.get("input")
    prediction = event.get("prediction")
    feedback = event.get("feedback")
    origin = data.get("origin")
    low_confidence = data.get("low_confidence")
    pii_masks = data.get("pii_masks")
    if not (
        given.__class__ is dict
        and origin.__class__ is dict
        and low_confidence.__class__ is bool
        and pii_masks.__class__ is int
        and _absent_or(event, "model_version", str)
        and _absent_or(given, "text", str)
        and _absent_or(given, "image_png_b64", str)
        and _absent_or(data, "label", str)
        and _absent_or(data, "text_truncated", bool)
        and _absent_or(data, "flag", str)
    ):
        return None
    topic, partition, offset = origin.get("topic"), origin.get("partition"), origin.get("offset")
    if not (topic.__class__ is str and partition.__class__ is int and offset.__class__ is int):
        return None
    if prediction is not None:
        if prediction.__class__ is not dict:
            return None
        confidence = prediction.get("confidence")
        if not (
            _absent_or(prediction, "label", str)
            and (confidence is None or confidence.__class__ is float or confidence.__class__ is int)
            and _absent_or(prediction, "image_png_b64", str)
        ):
            return None
    if feedback is not None and not (
        feedback.__class__ is dict and _absent_or(feedback, "target_png_b64", str)
    ):
        return None
    try:
        _timestamp(event["event_time"])
    except Exception:  # noqa: BLE001 - RecordError, or an OverflowError the slow way raises again
        return None
    return RoutedRecord(
        event,
        data.get("label"),
        low_confidence,
        pii_masks,
        Origin(topic, partition, offset),
        bool(data.get("text_truncated")),
        data.get("flag"),
    )


@dataclass(frozen=True)
class DuplicateRecord:
    """What the stream job writes to the duplicates topic: an event_id seen before, and where."""

    event_id: str
    origin: Origin

    def to_json(self) -> str:
        return compact_json({"event_id": self.event_id, "origin": self.origin.as_dict()})

    @classmethod
    def from_json(cls, value: bytes | str) -> DuplicateRecord:
        return parse_record(value, "duplicate record", cls._from_data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> DuplicateRecord:
        return cls(
            field_of(data, "event_id", "a string"), Origin.from_dict(field_of(data, "origin", "an object"))
        )
