"""``POST /v1/feedback``: one feedback event or a batch, validated whole, then sent.

A batch is validated as a whole before anything is sent: if any item is invalid the answer
is 422 listing every problem by item index and field, and nothing is produced, so a client
can fix and resend the batch safely; an event erased on request (``flywheel forget``) is
refused the same way with reason ``forgotten``. Valid requests are produced and confirmed by
Kafka before the 202 answer lists the accepted ids.
"""

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from flywheel.errors import BrokerError, InvalidEventError
from flywheel.events import FeedbackEvent, validate_event
from flywheel.journal import JournalWriteError, SpoolFull
from flywheel.privacy import FORGOTTEN
from flywheel.redact import redact_text
from pipelines.http_body import MAX_PROBLEMS, error, hidden, read_json, responses
from pipelines.http_metrics import FEEDBACK
from pipelines.review import review_claims


class Accepted(BaseModel):
    accepted: list[str] = Field(description="event ids Kafka confirmed")


def add_feedback_routes(app, settings, get_client, token: str | None) -> None:
    """Add ``POST /v1/feedback`` to ``app``; ``get_client()`` gives the FeedbackClient."""

    guarded: dict[str, Any] = {"security": [{"bearer": []}]} if token is not None else {}
    auth = (401,) if token is not None else ()

    @app.post(
        "/v1/feedback",
        status_code=202,
        response_model=Accepted,
        responses=responses(*auth, 403, 413, 415, 422, 503),
        summary="submit one feedback event or a batch",
        openapi_extra={
            **guarded,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/FeedbackEvent"},
                                {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": settings.http.max_batch,
                                    "items": {"$ref": "#/components/schemas/FeedbackEvent"},
                                },
                            ]
                        }
                    }
                },
            },
        },
    )
    async def post_feedback(request: Request):
        data, problem = await read_json(request, settings, token)
        if problem is not None:
            return problem
        items = data if isinstance(data, list) else [data]
        if not items:
            return error(422, "empty", "the batch is empty; send at least one event")
        if len(items) > settings.http.max_batch:
            return error(
                413, "too_many", f"{len(items)} events; at most {settings.http.max_batch} per request"
            )
        # in a worker thread: a batch with a million problems costs seconds of CPU
        events, problems, total, bad_items = await run_in_threadpool(_validate_batch, items)
        if total:
            FEEDBACK.labels("invalid").inc(len(items))
            return error(
                422,
                "invalid_event",
                f"{bad_items} invalid event(s) with {total} problem(s), the first {len(problems)} listed; "
                "nothing was sent",
                errors=problems,
                errors_total=total,
            )
        try:  # the client is made on first use: an unreachable broker is a 503, as for sending
            refused = await run_in_threadpool(lambda: _forgotten_problems(get_client(), events))
        except BrokerError as exc:
            return hidden(503, "kafka_unavailable", "Kafka is unavailable; retry", exc)
        if refused:
            FEEDBACK.labels("forgotten").inc(len(events))
            return error(
                422,
                FORGOTTEN,
                f"{len(refused)} event(s) were erased on request (`flywheel forget`), by their event_id or "
                "their subject_id, and cannot be submitted again; nothing was sent",
                errors=refused[:MAX_PROBLEMS],
                errors_total=len(refused),
            )
        try:
            result = await run_in_threadpool(lambda: get_client().submit_many(events))
        except (SpoolFull, JournalWriteError) as exc:
            FEEDBACK.labels("not_delivered").inc(len(events))
            return error(503, exc.code, f"{exc}; nothing was accepted")
        except BrokerError as exc:
            return hidden(503, "kafka_unavailable", "Kafka is unavailable; retry", exc)
        FEEDBACK.labels("accepted").inc(len(result.accepted))
        if result.failed:
            FEEDBACK.labels("not_delivered").inc(len(result.failed))
            return error(
                503,
                "not_delivered",
                "Kafka did not confirm some events; resend them (safe: event_id is the idempotency key)",
                accepted=result.accepted,
                failed=[{"event_id": f.event_id, "error": redact_text(f.error)} for f in result.failed],
            )
        return JSONResponse({"accepted": result.accepted}, status_code=202)


def _validate_batch(items: list) -> tuple[list[FeedbackEvent], list[dict[str, Any]], int, int]:
    """The valid events, the first MAX_PROBLEMS problems (field and message cut short), how
    many problems in all and in how many items."""

    events: list[FeedbackEvent] = []
    problems: list[dict[str, Any]] = []
    total, bad_items = 0, 0
    for index, item in enumerate(items):
        try:
            event = validate_event(item)
            found = list(review_claims(event))
        except InvalidEventError as exc:
            found = exc.problems
            event = None
        if found:
            bad_items += 1
            total += len(found)
            for field, message in found[: max(0, MAX_PROBLEMS - len(problems))]:
                problems.append({"index": index, "field": str(field)[:200], "message": str(message)[:500]})
        elif event is not None:
            events.append(event)
    return events, problems, total, bad_items


def _forgotten_problems(client, events: list[FeedbackEvent]) -> list[dict[str, Any]]:
    """One problem per event of a forgotten id or subject (a client without the check: none)."""
    check = getattr(client, "forgotten_ids", None)
    if check is None:
        return []
    gone = check([(e.event_id, e.subject_id) for e in events])
    return [
        {"index": i, "field": "event_id", "message": f"{e.event_id} was erased on request"}
        for i, e in enumerate(events)
        if e.event_id in gone
    ]
