"""HTTP feedback endpoint (FastAPI).

``POST /v1/feedback`` takes one event (a JSON object) or a batch (a JSON array).
A batch is validated as a whole before anything is sent: if any item is invalid the
answer is 422 listing every problem by item index and field, and nothing is
produced, so a client can fix and resend the batch safely. Valid requests are
produced and confirmed by Kafka before the 202 answer lists the accepted ids.

Run it with ``flywheel serve-feedback``.
"""

import hmac
from contextlib import asynccontextmanager
from typing import Any

from flywheel.errors import BrokerError, InvalidEventError
from flywheel.events import NOT_UTF8, FeedbackEvent, validate_event
from flywheel.jsonstrict import JsonProblem, loads_json
from flywheel.settings import Settings


def create_app(settings: Settings, client: Any = None):
    """Build the app. ``client`` is a FeedbackClient; one is made on first use if omitted."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    state: dict[str, Any] = {"client": client}

    @asynccontextmanager
    async def lifespan(_app):
        yield
        if state["client"] is not None:
            state["client"].close()

    app = FastAPI(title="Flywheel feedback", version="1", lifespan=lifespan)
    token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None
    limit = settings.http.max_body_bytes

    def get_client():
        if state["client"] is None:
            from pipelines.sdk import FeedbackClient

            state["client"] = FeedbackClient(settings)
        return state["client"]

    def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": code, "message": message, **extra}, status_code=status)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "kafka": settings.bootstrap_servers}

    @app.post("/v1/feedback", status_code=202)
    async def post_feedback(request: Request):
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(
                    401,
                    "unauthorized",
                    "send 'Authorization: Bearer <token>' with the configured token",
                )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            return error(413, "too_large", f"body is {declared} bytes; the limit is {limit}; split the batch")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return error(413, "too_large", f"body exceeds {limit} bytes; split the batch")
        try:  # in a worker thread: a big body must not stall the event loop
            data = await run_in_threadpool(loads_json, bytes(body))
        except UnicodeDecodeError as exc:
            return error(422, NOT_UTF8, f"body is not UTF-8 (at byte {exc.start}); send UTF-8 JSON")
        except JsonProblem as exc:
            return error(422, exc.code, f"body cannot be parsed: {exc}")
        items = data if isinstance(data, list) else [data]
        if not items:
            return error(422, "empty", "the batch is empty; send at least one event")
        if len(items) > settings.http.max_batch:
            return error(
                413,
                "too_many",
                f"{len(items)} events; at most {settings.http.max_batch} per request",
            )
        events: list[FeedbackEvent] = []
        problems: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                events.append(validate_event(item))
            except InvalidEventError as exc:
                for field, message in exc.problems:
                    problems.append({"index": index, "field": field, "message": message})
        if problems:
            return error(
                422,
                "invalid_event",
                f"{len({p['index'] for p in problems})} invalid event(s); nothing was sent",
                errors=problems,
            )
        try:
            result = await run_in_threadpool(lambda: get_client().submit_many(events))
        except BrokerError as exc:
            return error(503, "kafka_unavailable", str(exc))
        if result.failed:
            return error(
                503,
                "not_delivered",
                "Kafka did not confirm some events; resend them (safe: event_id is the idempotency key)",
                accepted=result.accepted,
                failed=[{"event_id": f.event_id, "error": f.error} for f in result.failed],
            )
        return {"accepted": result.accepted}

    return app


def serve(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.http.host, port=settings.http.port, log_level="info")
