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
        """Parse a clean/review record; RecordError saying what is wrong if it is not one."""
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
