"""The prediction log: every answer ``POST /v1/predict`` gives, on ``<prefix>.predictions``.

A :class:`PredictionRecord` is written by the HTTP app (through :class:`PredictionLog`, which
waits for Kafka's confirmation before the answer is returned) and read by the ingestor,
which keeps it in the live ledger (``pipelines.live``) so that feedback carrying only a
``prediction_id`` is joined to the version that answered, its prediction and confidence.
This module owns the record's JSON shape; nobody else reads or writes it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from flywheel.errors import BrokerError, FlywheelError
from flywheel.events import MAX_FUTURE_SKEW, Id
from flywheel.journal import Entry
from flywheel.jsonstrict import JsonProblem, loads_json
from flywheel.kafka import Topics
from flywheel.names import MODEL_NAME_PATTERN
from flywheel.producer import DurableProducer

if TYPE_CHECKING:
    from flywheel.settings import Settings

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class PredictionRecordError(FlywheelError):
    """A record on the predictions topic is not one this module wrote."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_prediction_id() -> str:
    return f"p-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class PredictionRecord:
    """One served prediction. ``prediction`` is the task's answer as in the feedback contract
    (``label`` and ``confidence``, or ``image_png_b64``); ``shadow_of`` names the champion's
    prediction a shadow (candidate) prediction was made beside, and is never returned."""

    prediction_id: str
    model_name: str
    model_version: int
    task: str
    predicted_at: datetime
    prediction: dict[str, Any]
    shadow_of: str | None = None

    def to_json(self) -> bytes:
        data = {
            "prediction_id": self.prediction_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "task": self.task,
            "predicted_at": self.predicted_at.astimezone(UTC).isoformat(),
            "prediction": self.prediction,
        }
        if self.shadow_of is not None:
            data["shadow_of"] = self.shadow_of
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, value: bytes) -> PredictionRecord:
        """Parse a record of the predictions topic; PredictionRecordError for anything this
        module would not have written (ids, names, a version number, a plausible time)."""

        try:
            data = loads_json(value)
        except (JsonProblem, UnicodeDecodeError) as exc:
            raise PredictionRecordError(f"prediction record is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PredictionRecordError("prediction record is not a JSON object")

        def get(name: str, kind: type, optional: bool = False) -> Any:
            value = data.get(name)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise PredictionRecordError(
                    f"prediction record field {name!r} is missing or not {kind.__name__}"
                )
            return value

        ids = TypeAdapter(Id)
        try:
            pid = ids.validate_python(get("prediction_id", str))
            shadow_of = get("shadow_of", str, optional=True)
            if shadow_of is not None:
                ids.validate_python(shadow_of)
        except ValidationError as exc:
            raise PredictionRecordError(
                f"prediction record has a malformed id: {exc.errors()[0]['msg']}"
            ) from exc
        name = get("model_name", str)
        if not re.fullmatch(MODEL_NAME_PATTERN, name):
            raise PredictionRecordError(f"prediction record's model_name {name[:60]!r} is not a model name")
        version = get("model_version", int)
        if not 0 < version < 2**31:
            raise PredictionRecordError(
                f"prediction record's model_version {version} is not a registry version"
            )
        try:
            when = datetime.fromisoformat(get("predicted_at", str)).astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise PredictionRecordError(f"prediction record's predicted_at: {exc}") from exc
        if not EARLIEST <= when <= datetime.now(UTC) + MAX_FUTURE_SKEW:
            raise PredictionRecordError(f"prediction record's predicted_at {when.isoformat()} is implausible")
        prediction = get("prediction", dict)
        if not all(isinstance(k, str) and isinstance(v, str | int | float) for k, v in prediction.items()):
            raise PredictionRecordError("prediction record's prediction is not a flat object")
        return cls(pid, name, version, get("task", str), when, prediction, shadow_of)


class PredictionLog:
    """Produces prediction records, keyed by ``prediction_id``; ``log`` returns once they
    were journaled and Kafka confirmed every one (or raises BrokerError, or ``SpoolFull`` /
    ``JournalWriteError`` from the journal). Thread-safe (one ``DurableProducer``)."""

    def __init__(self, settings: Settings, **producer_overrides: Any):
        self.topic = Topics.from_settings(settings).predictions
        self.producer = DurableProducer(settings, **producer_overrides)

    def log(self, records: list[PredictionRecord]) -> None:
        entries = [Entry(self.topic, r.prediction_id.encode(), r.to_json(), r.prediction_id) for r in records]
        errors = [e for e in self.producer.deliver(entries) if e is not None]
        if errors:
            raise BrokerError(f"{len(errors)} prediction record(s) not logged, first: {errors[0]}")

    @property
    def health(self):
        return self.producer.health

    def close(self) -> None:
        self.producer.close()
