"""The feedback event contract, schema version 1.

One pydantic model, used by every client (SDK, CLI, HTTP) *and* by the stream job,
so the two can never disagree. ``flywheel/schemas/feedback-event-v1.schema.json`` is
generated from it (``python -m flywheel.events > ...``) for producers in other
languages; a test keeps the committed file and the model in step.

Build an event with :func:`feedback_event` (JSON data, not validated). Use
:func:`parse_event` for bytes off the wire and :func:`validate_event` for a
dict or model: both raise :class:`InvalidEventError` with a machine-readable code
and ``(field, message)`` pairs, fields in dotted form (``prediction.confidence``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from flywheel.errors import InvalidEventError
from flywheel.images import ImageError, decode_png, png_size
from flywheel.jsonstrict import DUPLICATE_KEY as DUPLICATE_KEY  # reason codes of wire JSON
from flywheel.jsonstrict import NOT_JSON as NOT_JSON
from flywheel.jsonstrict import TOO_DEEP as TOO_DEEP
from flywheel.jsonstrict import JsonProblem, loads_json
from flywheel.names import MODEL_NAME_PATTERN

SCHEMA_VERSION = 1
TASKS = ("text-classification", "image-restoration")
MAX_TEXT_CHARS = 20_000
MAX_LABEL_CHARS = 200
MAX_ID_CHARS = 128
MAX_IMAGE_B64_CHARS = 256 * 1024  # three images + text stay under Kafka's 1 MiB default
MAX_EVENT_BYTES = 1_000_000
# Largest record any Flywheel producer writes (a routed event plus its envelope). Producers'
# max.request.size and the topics' max.message.bytes are set from it.
MAX_RECORD_BYTES = 2 * MAX_EVENT_BYTES
MAX_FUTURE_SKEW = timedelta(minutes=5)
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Reason codes recorded on the dead-letter topic (with NOT_JSON, DUPLICATE_KEY, TOO_DEEP).
NOT_UTF8 = "not_utf8"
TOO_LARGE = "too_large"
SCHEMA_INVALID = "schema_invalid"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")


# (Lone surrogates need no check of ours: pydantic rejects them as "not a valid string".)
def _no_controls(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(
            f"holds the control character {found.group()!r} at position {found.start()}; remove it"
        )
    return value


def _visible(value: str) -> str:
    if not any(unicodedata.category(c)[0] not in "ZC" for c in value):
        raise ValueError("has no visible character (only spaces, control or format characters)")
    return value


Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[A-Za-z0-9._:-]+$")]
Name = Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_no_controls)]
Label = Annotated[StrictStr, Field(min_length=1, max_length=MAX_LABEL_CHARS), AfterValidator(_no_controls)]
PngB64 = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=MAX_IMAGE_B64_CHARS,
        description="base64 of a PNG file",
        json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/png"},
    ),
]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _png(cls, value: Any, info: Any) -> Any:
        if info.field_name.endswith("png_b64") and value is not None:
            try:
                head = base64.b64decode(value[:16], validate=True)
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("is not valid base64") from exc
            if not head.startswith(PNG_MAGIC):
                raise ValueError("is not a PNG image (bad magic bytes); send PNG bytes")
            check_png(value)
        return value


def check_png(png_b64: str) -> None:
    """ValueError saying what is wrong unless a base64 PNG decodes whole within the contract's
    bounds (``flywheel.images.ImageLimits``' defaults)."""

    try:
        decode_png(base64.b64decode(png_b64, validate=True))
    except ImageError as exc:
        raise ValueError(str(exc)) from exc


def _one_of(*names: str) -> dict[str, Any]:
    return {"oneOf": [{"required": [n]} for n in names]}


class Input(_Part):
    """What the model saw: ``{"text": ...}`` or ``{"image_png_b64": ...}``."""

    model_config = ConfigDict(json_schema_extra=_one_of("text", "image_png_b64"))

    text: (
        Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_visible)] | None
    ) = None
    image_png_b64: PngB64 | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Input:
        if (self.text is None) == (self.image_png_b64 is None):
            raise ValueError("give exactly one of 'text' or 'image_png_b64'")
        return self


class Prediction(_Part):
    """What the model answered: a label with confidence, or an image."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["label", "confidence"]}, {"required": ["image_png_b64"]}]}
    )

    label: Label | None = None
    confidence: Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)] | None = None
    image_png_b64: PngB64 | None = None

    @model_validator(mode="after")
    def _shape(self) -> Prediction:
        is_label = self.label is not None or self.confidence is not None
        if is_label and self.image_png_b64 is not None:
            raise ValueError("give either 'label' and 'confidence', or 'image_png_b64', not both")
        if is_label and (self.label is None or self.confidence is None):
            missing = "confidence" if self.confidence is None else "label"
            raise ValueError(f"a label prediction needs both 'label' and 'confidence'; {missing} is missing")
        if not is_label and self.image_png_b64 is None:
            raise ValueError("give 'label' and 'confidence', or 'image_png_b64'")
        return self


class Feedback(_Part):
    """The verified answer: a label, a target image, or accept/reject of the prediction."""

    model_config = ConfigDict(json_schema_extra=_one_of("label", "target_png_b64", "accepted"))

    label: Label | None = None
    target_png_b64: PngB64 | None = None
    accepted: StrictBool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Feedback:
        given = [v is not None for v in (self.label, self.target_png_b64, self.accepted)]
        if sum(given) != 1:
            raise ValueError("give exactly one of 'label', 'target_png_b64' or 'accepted'")
        return self


class FeedbackEvent(BaseModel):
    """One piece of feedback on one prediction. ``event_id`` is the idempotency key."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="FeedbackEvent",
        json_schema_extra={"$id": "feedback-event-v1"},
    )

    schema_version: Literal[1] = Field(description="always the integer 1 for this contract")
    event_id: Id = Field(description="idempotency key; also the Feast sample_id")
    event_time: datetime = Field(
        description="RFC 3339 timestamp with a UTC offset",
        json_schema_extra={"format": "date-time", "pattern": f"^{_RFC3339.pattern}$"},
    )
    source: Name = Field(description="submitting team or app")
    model_name: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN)]
    model_version: (
        Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_no_controls)] | None
    ) = None
    task: Literal["text-classification", "image-restoration"]
    input: Input
    prediction: Prediction | None = None
    feedback: Feedback | None = None
    label_source: Literal["user", "review", "system"]
    prediction_id: Id | None = None
    subject_id: (
        Annotated[
            StrictStr,
            Field(min_length=1, max_length=MAX_ID_CHARS),
            AfterValidator(_no_controls),
            AfterValidator(_visible),
        ]
        | None
    ) = Field(
        None,
        description="the end user this event is about (at most 128 characters), for erasure on request; "
        "stored only as a keyed pseudonym",
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_one(cls, value: Any) -> Any:
        if type(value) is not int or value != SCHEMA_VERSION:
            raise ValueError(f"must be the integer {SCHEMA_VERSION}, got {value!r:.40}")
        return value

    @field_validator("event_time", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise ValueError(
                f"must be an RFC 3339 string such as '2026-01-31T12:00:00Z', got {type(value).__name__}"
            )
        if not _RFC3339.fullmatch(value):
            raise ValueError(
                f"{value[:40]!r} is not an RFC 3339 timestamp with a UTC offset; "
                "use e.g. '2026-01-31T12:00:00Z' or '2026-01-31T14:00:00+02:00'"
            )
        try:
            return datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise ValueError(f"{value[:40]!r} is not a real date and time ({exc})") from exc

    @field_validator("event_time", mode="after")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. '2026-01-31T12:00:00Z' or '+02:00'")
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError(f"{value.isoformat()} is out of range with its UTC offset") from exc
        if value > datetime.now(UTC) + MAX_FUTURE_SKEW:
            raise ValueError(f"{value.isoformat()} is in the future; send the time the feedback happened")
        if value < EARLIEST_EVENT_TIME:
            raise ValueError(f"{value.isoformat()} is before {EARLIEST_EVENT_TIME.date()}")
        return value

    @model_validator(mode="after")
    def _matches_task(self) -> FeedbackEvent:
        text_task = self.task == "text-classification"
        if text_task != (self.input.text is not None):
            need = "input.text" if text_task else "input.image_png_b64"
            raise ValueError(f"task {self.task!r} needs {need}")
        if self.prediction is not None and text_task != (self.prediction.label is not None):
            need = "label and confidence" if text_task else "image_png_b64"
            raise ValueError(f"task {self.task!r} needs a prediction with {need}")
        fb = self.feedback
        if fb is not None and fb.accepted is None and text_task != (fb.label is not None):
            need = "label" if text_task else "target_png_b64"
            raise ValueError(f"task {self.task!r} needs feedback with {need} (or accepted)")
        if (
            fb is not None
            and fb.accepted is not None
            and self.prediction is None
            and self.prediction_id is None
        ):
            raise ValueError(
                "feedback 'accepted' needs the prediction it accepts or rejects, or the prediction_id "
                "POST /v1/predict answered"
            )
        if not text_task:
            self._same_size()
        return self

    def _same_size(self) -> None:
        """A restoration's prediction and target are the input's size (each PNG was decoded
        whole by its field's validator: the sizes are read from the headers)."""

        def size_of(png_b64: str) -> tuple[int, int]:
            return png_size(base64.b64decode(png_b64))

        if self.input.image_png_b64 is None:
            return  # a text event: nothing to compare
        size = size_of(self.input.image_png_b64)
        others = {
            "prediction.image_png_b64": self.prediction.image_png_b64 if self.prediction else None,
            "feedback.target_png_b64": self.feedback.target_png_b64 if self.feedback else None,
        }
        for name, value in others.items():
            w, h = size_of(value) if value is not None else size
            if (w, h) != size:
                raise ValueError(
                    f"{name} is {w}x{h} but input.image_png_b64 is {size[0]}x{size[1]}; "
                    "an image task's prediction and target must be the input's size"
                )

    # ---- derived views -------------------------------------------------------------

    @property
    def verified_label(self) -> str | None:
        """The label this event vouches for, if any (explicit, or an accepted prediction)."""
        fb = self.feedback
        if fb is None:
            return None
        if fb.label is not None:
            return fb.label
        if fb.accepted and self.prediction is not None:
            return self.prediction.label
        return None

    @property
    def has_verified_answer(self) -> bool:
        fb = self.feedback
        return fb is not None and (fb.label is not None or fb.target_png_b64 is not None or bool(fb.accepted))

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")

    def to_json_dict(self) -> dict[str, Any]:
        """The same content as ``to_json_bytes``, as JSON-ready Python data."""
        return self.model_dump(mode="json", exclude_none=True)


def subject_problem(subject_id: str) -> str | None:
    """What is wrong with ``subject_id`` as the contract's field (None: nothing), for callers
    that take it outside an event (``DELETE /v1/subjects/{subject_id}``)."""
    if not 1 <= len(subject_id) <= MAX_ID_CHARS:
        return f"has {len(subject_id)} characters; 1 to {MAX_ID_CHARS} are allowed"
    for check in (_no_controls, _visible):
        try:
            check(subject_id)
        except ValueError as exc:
            return str(exc)
    return None


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a field of the feedback contract v1; remove it"
        elif err["type"] == "missing":
            msg = "is required"
        out.append((field, msg))
    return out


def validate_event(data: FeedbackEvent | dict[str, Any]) -> FeedbackEvent:
    """Validate a dict (or pass a model through); raise InvalidEventError on any problem."""
    if isinstance(data, FeedbackEvent):
        return data
    if not isinstance(data, dict):
        raise InvalidEventError(
            SCHEMA_INVALID, [("", f"an event must be a JSON object, got {type(data).__name__}")]
        )
    try:
        return FeedbackEvent.model_validate(data)
    except ValidationError as exc:
        raise InvalidEventError(SCHEMA_INVALID, _problems(exc)) from exc


def parse_event(raw: bytes | str) -> FeedbackEvent:
    """Parse wire bytes (UTF-8 JSON) into a validated event."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_EVENT_BYTES:
            raise InvalidEventError(
                TOO_LARGE, [("", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")]
            )
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEventError(
                NOT_UTF8,
                [("", f"bytes are not UTF-8 (at byte {exc.start}); encode events as UTF-8 JSON")],
            ) from exc
    elif len(raw) > MAX_EVENT_BYTES:
        raise InvalidEventError(
            TOO_LARGE, [("", f"event is {len(raw)} characters; the limit is {MAX_EVENT_BYTES}")]
        )
    try:
        data = loads_json(raw)
    except JsonProblem as exc:
        raise InvalidEventError(exc.code, [("", str(exc))]) from exc
    return validate_event(data)


def event_time_text(when: datetime | None = None) -> str:
    """``when`` (default: now) as the contract's event_time: RFC 3339 in UTC, ``...Z``."""
    when = datetime.now(UTC) if when is None else when
    if when.tzinfo is None:
        raise ValueError(f"event_time {when.isoformat()} needs a timezone, e.g. datetime.now(UTC)")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def feedback_event(
    event_id: str,
    model_name: str,
    task: str | None = None,
    *,
    text: str | None = None,
    image_png_b64: str | None = None,
    prediction: dict[str, Any] | None = None,
    feedback: dict[str, Any] | None = None,
    label_source: str,
    source: str,
    model_version: str | None = None,
    event_time: datetime | str | None = None,
    prediction_id: str | None = None,
    subject_id: str | None = None,
) -> dict[str, Any]:
    """A v1 feedback event as JSON data, fields in the schema's order, unset optionals left out.

    ``task`` defaults to the input's (text: text-classification, else image-restoration);
    ``event_time`` to now. ``prediction`` is ``{"label", "confidence"}`` or
    ``{"image_png_b64"}``; ``feedback`` is ``{"label"}``, ``{"target_png_b64"}`` or
    ``{"accepted"}``. Nothing is validated here: the SDK validates before producing, and
    ``validate_event`` turns the dict into a FeedbackEvent.
    """
    if task is None:
        task = "text-classification" if text is not None else "image-restoration"
    if not isinstance(event_time, str):
        event_time = event_time_text(event_time)
    given = {"text": text, "image_png_b64": image_png_b64}
    event = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "event_time": event_time,
        "source": source,
        "model_name": model_name,
        "model_version": model_version,
        "task": task,
        "input": {k: v for k, v in given.items() if v is not None},
        "prediction": prediction,
        "feedback": feedback,
        "label_source": label_source,
        "prediction_id": prediction_id,
        "subject_id": subject_id,
    }
    return {k: v for k, v in event.items() if v is not None}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of contract v1 (what the committed schema file holds)."""
    schema = FeedbackEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
