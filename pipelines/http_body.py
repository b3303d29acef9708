"""The body and the errors of every HTTP route: one error shape, read one way.

Every error answer is ``{"error": code, "message": what to do, ...}`` (:class:`ErrorBody`);
:func:`read_json` is the one way a write route reads its body (bearer token, JSON content
type, same origin, size and time limits, strict JSON); :func:`hidden` answers a failure
behind the app with an error id and logs its details, redacted. Used by the feedback and
predict routes (``pipelines.feedback_api``, ``pipelines.predict_api``), the app itself
(``pipelines.http_api``) and the review API (``pipelines.review_api``).
"""

import hmac
import logging
import uuid
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from flywheel.events import NOT_UTF8
from flywheel.jsonstrict import JsonProblem, loads_json
from flywheel.redact import redact_text
from pipelines.http_guard import BodyProblem, foreign_origin, is_json, read_body

MAX_PROBLEMS = 100  # an error reply lists at most this many problems, and counts the rest


class ProblemOut(BaseModel):
    index: int
    field: str
    message: str


class FailedOut(BaseModel):
    event_id: str
    error: str


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable ``error`` code and a ``message`` saying what to do."""

    model_config = ConfigDict(title="Error")

    error: str
    message: str
    errors: list[ProblemOut] | None = Field(
        None, description=f"422 invalid_event/invalid_request: the first {MAX_PROBLEMS} problems"
    )
    errors_total: int | None = Field(None, description="422: how many problems there were in all")
    accepted: list[str] | None = Field(None, description="503 not_delivered: ids Kafka confirmed")
    failed: list[FailedOut] | None = Field(None, description="503 not_delivered: ids to resend")
    error_id: str | None = Field(None, description="5xx: names this failure in the server's log")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "missing or wrong bearer token",
        403: "a browser page of another origin (Origin header) may not write",
        404: "no such model, or it has no champion",
        413: "body or batch too large",
        415: "the body must be sent as application/json",
        422: "invalid JSON or invalid content: every problem listed",
        503: "Kafka or the model is unavailable; retry",
    }
    return {s: {"model": ErrorBody, "description": text[s]} for s in statuses}


def error(status: int, code: str, message: str, **extra: Any):
    """The error answer (a ``JSONResponse``)."""

    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def hidden(status: int, code: str, message: str, exc: BaseException):
    """A failure of something behind the app (Kafka, MLflow, a store): the client gets a
    generic message and an error id; the log gets the details under that id, redacted."""

    error_id = uuid.uuid4().hex[:12]
    logging.getLogger("flywheel.http").warning(
        "error %s (%s): %s: %s", error_id, code, type(exc).__name__, redact_text(str(exc))
    )
    return error(
        status, code, f"{message} (error id {error_id}: the server's log says more)", error_id=error_id
    )


def bearer_ok(request, token: str | None) -> bool:
    """``request`` carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return (
        token is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), token.encode())
    )


async def read_json(request, settings, token: str | None) -> tuple[Any, Any]:
    """The body as JSON data, after the token and size checks; or the error answer."""

    limit = settings.http.max_body_bytes
    if token is not None and not bearer_ok(request, token):
        return None, error(
            401, "unauthorized", "send 'Authorization: Bearer <token>' with the configured token"
        )
    if not is_json(request.headers.get("content-type")):
        return None, error(415, "json_only", "send the body as JSON, with 'Content-Type: application/json'")
    if foreign_origin(request.headers.get("origin"), request.headers.get("host")):
        return None, error(
            403, "cross_site", "a web page of another origin may not write here; send from a server"
        )
    try:
        body = await read_body(request, limit, settings.http.body_timeout_s)
    except BodyProblem as exc:
        return None, error(exc.status, exc.code, exc.message)
    try:  # in a worker thread: a big body must not stall the event loop
        return await run_in_threadpool(loads_json, bytes(body)), None
    except UnicodeDecodeError as exc:
        return None, error(422, NOT_UTF8, f"body is not UTF-8 (at byte {exc.start}); send UTF-8 JSON")
    except JsonProblem as exc:
        return None, error(422, exc.code, f"body cannot be parsed: {exc}")
