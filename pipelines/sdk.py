"""The Python SDK product teams use to send feedback.

>>> with FeedbackClient.from_settings() as client:
...     client.submit({"schema_version": 1, "event_id": "e-1", ...})

Every event is validated with the contract model before it is produced, so an
invalid event never reaches Kafka. Events are keyed by ``event_id`` and sent by an
idempotent producer; ``submit`` returns only after the broker confirmed delivery,
and ``submit_many`` reports the outcome of every event: accepted, rejected (with
its problems) or failed (with the Kafka error). Nothing is dropped silently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from flywheel.errors import DeliveryError, FlywheelError, InvalidEventError
from flywheel.events import FeedbackEvent, validate_event
from flywheel.journal import Entry, new_ident
from flywheel.kafka import Topics, check_reachable, unreachable_hint
from flywheel.privacy import FORGOTTEN, Forgotten, pseudonym
from flywheel.producer import DurableProducer
from flywheel.settings import Settings, load_settings


@dataclass
class Rejected:
    index: int  # position in the submitted sequence (0-based)
    event_id: str | None
    code: str
    problems: list[tuple[str, str]]


@dataclass
class Failed:
    index: int
    event_id: str
    error: str


@dataclass
class SubmitResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.failed

    def raise_for_errors(self) -> None:
        if self.failed:
            failed = self.failed[0]
            raise DeliveryError(
                f"{len(self.failed)} event(s) were not confirmed by Kafka, first {failed.event_id}: "
                f"{failed.error}; resubmit them (event_id makes that safe)"
            )
        if self.rejected:
            rejected = self.rejected[0]
            raise InvalidEventError(
                rejected.code,
                [(f"[{rejected.index}]" + (f".{f}" if f else ""), m) for f, m in rejected.problems],
            )


class FeedbackClient:
    """Validates and produces feedback events to ``<prefix>.raw``. Use as a context manager.

    Sending goes through ``flywheel.producer.DurableProducer``: each event is journaled
    (fsync'd) before it is produced, and counted accepted only once Kafka confirmed it, so
    an accepted event survives the embedded broker's restart; the producer rebuilds itself
    when librdkafka cannot recover (a broker that came back empty)."""

    def __init__(self, settings: Settings, *, check_connection: bool = True, **producer_overrides: Any):
        self.settings = settings
        self.topic = Topics.from_settings(settings).raw
        if check_connection:
            check_reachable(settings)
        self.producer = DurableProducer(settings, **producer_overrides)
        self.forgotten = Forgotten.of(settings)
        self._closed = False

    @classmethod
    def from_settings(cls, path: str | None = None, **kwargs: Any) -> FeedbackClient:
        return cls(load_settings(path), **kwargs)

    # ---- sending -------------------------------------------------------------------

    def submit(self, event: FeedbackEvent | dict[str, Any]) -> str:
        """Validate, send and wait for confirmation; return the event_id or raise."""
        result = self.submit_many([event])
        result.raise_for_errors()
        return result.accepted[0]

    def submit_many(
        self,
        events: Iterable[FeedbackEvent | dict[str, Any]],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> SubmitResult:
        """Validate and send many events; wait until Kafka confirmed or failed each one.

        ``on_progress(n)`` is called as ``n`` more events are settled. Raises ``SpoolFull``
        or ``JournalWriteError`` (nothing of this call was sent) when the journal cannot
        take the events.
        """

        result = SubmitResult()
        entries: list[tuple[int, Entry]] = []
        subjects: list[str | None] = []
        for index, raw in enumerate(events):
            try:
                event = validate_event(raw)
            except InvalidEventError as exc:
                event_id = raw.get("event_id") if isinstance(raw, dict) else None
                result.rejected.append(
                    Rejected(
                        index,
                        event_id if isinstance(event_id, str) else None,
                        exc.code,
                        exc.problems,
                    )
                )
                if on_progress:
                    on_progress(1)
                continue
            entries.append(
                (index, Entry(self.topic, event.event_id.encode(), event.to_json_bytes(), event.event_id))
            )
            subjects.append(event.subject_id)
        entries = self._refuse_forgotten(result, entries, subjects, on_progress)
        self._deliver(result, entries, on_progress)
        return result

    def forgotten_ids(self, pairs: Iterable[tuple[str, str | None]]) -> set[str]:
        """Of ``(event_id, subject_id or None)`` pairs, the event ids that were erased
        (``flywheel forget``), by their id or by their subject."""
        key = self.forgotten.key
        return self.forgotten.which((e, pseudonym(key, s) if s else None) for e, s in pairs)

    def _refuse_forgotten(self, result: SubmitResult, entries: list, subjects: list, on_progress) -> list:
        """``entries`` less the events of a forgotten id or subject, each rejected with reason
        ``forgotten`` (``flywheel.privacy``)."""
        gone = self.forgotten_ids([(e.ident, s) for (_, e), s in zip(entries, subjects, strict=True)])
        if not gone:
            return entries
        for index, entry in entries:
            if entry.ident in gone:
                result.rejected.append(
                    Rejected(
                        index,
                        entry.ident,
                        FORGOTTEN,
                        [
                            (
                                "event_id",
                                "this event, or the subject it names, was erased on request (`flywheel "
                                "forget`); it cannot be submitted again",
                            )
                        ],
                    )
                )
        if on_progress:
            on_progress(len(gone))
        return [(i, e) for i, e in entries if e.ident not in gone]

    def send_raw(self, values: list[bytes], on_progress: Callable[[int], None] | None = None) -> SubmitResult:
        """Send bytes as they are, unvalidated (replaying captured traffic): the stream job
        validates them and routes invalid ones to the DLQ with their reason. Keyed by
        event_id when the bytes carry one, like validated events; otherwise by a generated
        ``~raw-`` id, the name its fate is recorded under (``flywheel.journal.new_ident``)."""

        result = SubmitResult()
        entries, subjects = [], []
        for index, value in enumerate(values):
            ident = _event_id_of(value) or new_ident()
            entries.append((index, Entry(self.topic, ident.encode(), bytes(value), ident)))
            subjects.append(_subject_of(value))
        entries = self._refuse_forgotten(result, entries, subjects, on_progress)
        self._deliver(result, entries, on_progress, named=lambda i, e: _event_id_of(e.value) or f"<line {i}>")
        return result

    def _deliver(self, result: SubmitResult, entries: list, on_progress, named=None) -> None:
        outcomes = self.producer.deliver([e for _, e in entries], on_progress)
        for (index, entry), error in zip(entries, outcomes, strict=True):
            name = named(index, entry) if named else entry.ident
            if error is None:
                result.accepted.append(name)
            else:
                result.failed.append(Failed(index, name, error))

    @property
    def health(self):
        """This client's ``flywheel.producer.DeliveryHealth``."""
        return self.producer.health

    # ---- lifecycle -----------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait for outstanding deliveries; return how many are still unconfirmed."""
        return self.producer.flush(self.settings.kafka.delivery_timeout_s if timeout_s is None else timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        left = self.flush()
        if left:
            raise DeliveryError(
                f"{left} event(s) still unconfirmed at close; Kafka at {self.settings.bootstrap_servers} "
                f"did not answer ({unreachable_hint(self.settings)}); resubmit them"
            )

    def __enter__(self) -> FeedbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _field_of(value: bytes, name: str) -> str | None:
    try:
        found = json.loads(value).get(name)
    except (ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) and found else None


def _event_id_of(value: bytes) -> str | None:
    return _field_of(value, "event_id")


def _subject_of(value: bytes) -> str | None:
    return _field_of(value, "subject_id")


@dataclass(frozen=True)
class Predictions:
    """What ``POST /v1/predict`` answered: one prediction per input, each with its
    ``prediction_id``, ``model_version`` and ``label`` and ``confidence`` (or ``image_png_b64``);
    ``model_version`` here is the last request's."""

    model_name: str
    model_version: str
    predictions: list[dict[str, Any]]


class ServingError(FlywheelError):
    """``POST /v1/predict`` did not answer with predictions; ``status`` and ``code`` say why."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


class ServingClient:
    """The HTTP client of ``POST /v1/predict`` (the app ``flywheel serve`` runs), beside
    :class:`FeedbackClient`: ``predict`` returns the predictions with their ``prediction_id``,
    to send back with the feedback on them. Use as a context manager."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 60.0):

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    @classmethod
    def for_settings(cls, settings: Settings, **kwargs: Any) -> ServingClient:
        token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None
        return cls(f"http://{settings.http.host}:{settings.http.port}", token, **kwargs)

    def predict(
        self, model_name: str, inputs: Iterable[str | dict[str, Any]], batch_size: int = 64
    ) -> Predictions:
        """Predict with ``model_name``'s champion; an input is a text or an input object
        (``{"text": ...}`` or ``{"image_png_b64": ...}``). Many inputs are sent in requests of
        ``batch_size`` (the server's ``serving.max_batch``); each prediction carries the
        ``model_version`` that made it (a promotion may land between two requests).
        ServingError when not answered."""

        items = [{"text": x} if isinstance(x, str) else x for x in inputs]
        predictions: list[dict[str, Any]] = []
        version = ""
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            try:
                answer = self._http.post("/v1/predict", json={"model_name": model_name, "inputs": chunk})
            except httpx.HTTPError as exc:
                raise ServingError(0, "unreachable", f"{exc}; is `flywheel serve` running?") from exc
            body = _json_or_none(answer)
            if answer.status_code != 200 or not isinstance(body, dict):
                body = body if isinstance(body, dict) else {}
                raise ServingError(
                    answer.status_code,
                    str(body.get("error", "http_error")),
                    str(body.get("message", answer.text[:500])),
                )
            version = body["model_version"]
            predictions += [{**p, "model_version": version} for p in body["predictions"]]
        return Predictions(model_name, version, predictions)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until ``/healthz`` answers (the app is starting), or ServingError."""

        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status = self._http.get("/healthz").status_code
                if status == 200:
                    return
                last = f"/healthz answered {status}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise ServingError(0, "unreachable", f"not ready within {timeout_s:.0f}s: {last}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_or_none(answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None
