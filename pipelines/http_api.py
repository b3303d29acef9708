"""The HTTP app (FastAPI): feedback in, predictions out, the review queue (``review_api``).

``POST /v1/feedback`` takes one event (a JSON object) or a batch (a JSON array). A batch
is validated as a whole before anything is sent: if any item is invalid the answer is 422
listing every problem by item index and field, and nothing is produced, so a client can
fix and resend the batch safely. Valid requests are produced and confirmed by Kafka before
the 202 answer lists the accepted ids.

``POST /v1/predict`` answers with a model's champion (``{"model_name", "inputs": [...]}``,
see :class:`PredictRequest`): one ``prediction_id`` per input, and the version that
answered. Every answer is written to the prediction log (``<prefix>.predictions``) and
confirmed by Kafka before it is returned, so feedback naming only the ``prediction_id`` is
joined to it. Which version answers is the ``predictor``'s business (``orchestration.
serving.ChampionPredictor`` follows the ``champion`` alias); this module only knows the
:class:`Predictor` protocol, so the stage does not import orchestration.

Both share the bearer token, the body-size limit and the error shape
(``{"error": code, "message": what to do, ...}``); ``/openapi.json`` documents every
request body and every status with its body. Run it with ``flywheel serve``.
"""

import hmac
import logging
import random
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from flywheel.errors import BrokerError, ConfigError, FlywheelError, InvalidEventError
from flywheel.events import NOT_UTF8, FeedbackEvent, Input, validate_event
from flywheel.journal import JournalWriteError, SpoolFull
from flywheel.jsonstrict import JsonProblem, loads_json
from flywheel.names import MODEL_NAME_PATTERN
from flywheel.privacy import FORGOTTEN
from flywheel.redact import redact_text
from flywheel.settings import Settings
from pipelines.http_guard import BodyProblem, foreign_origin, is_json, is_loopback, read_body
from pipelines.predictions import PredictionLog, PredictionRecord, new_prediction_id, now_utc
from pipelines.review import review_claims
from pipelines.review_api import ReviewAnswerIn, ReviewWorker, add_review_routes
from pipelines.review_queue import ReviewQueue
from pipelines.sdk import FeedbackClient

MAX_PROBLEMS = 100  # an error reply lists at most this many problems, and counts the rest


# ---- the predict contract ------------------------------------------------------------------


class PredictRequest(BaseModel):
    """What ``POST /v1/predict`` takes: a model and one or more inputs of its task."""

    model_config = ConfigDict(extra="forbid", title="PredictRequest")

    model_name: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN)]
    inputs: list[Input] = Field(min_length=1, description="one input per prediction, in order")


class PredictionOut(BaseModel):
    model_config = ConfigDict(title="Prediction")

    prediction_id: str = Field(description="send it back with the feedback on this prediction")
    label: str | None = Field(None, description="text-classification: the predicted label")
    confidence: float | None = Field(None, description="text-classification: its probability")
    image_png_b64: str | None = Field(None, description="image-restoration: the restored image (PNG)")


class PredictResponse(BaseModel):
    model_config = ConfigDict(title="PredictResponse")

    model_name: str
    model_version: str = Field(description="the registry version that answered")
    predictions: list[PredictionOut]


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


class Accepted(BaseModel):
    accepted: list[str] = Field(description="event ids Kafka confirmed")


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when this app's last Kafka delivery failed")
    kafka: str
    reason: str | None = Field(None, description="degraded: the last delivery error")
    producer_rebuilds: int = Field(0, description="times a stuck Kafka producer was replaced")


@dataclass(frozen=True)
class Served:
    """A predictor's answer: the version that answered and one contract ``prediction``
    object (``{"label", "confidence"}`` or ``{"image_png_b64"}``) per input."""

    model_name: str
    version: int
    task: str
    answers: list[dict[str, Any]]


class NotServed(FlywheelError):
    """The predictor cannot answer: ``status`` 404 (no such model or champion), 422 (inputs
    not of the model's task), 503 (the version cannot be loaded right now)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class Predictor(Protocol):
    def predict(self, model_name: str, inputs: list[Input]) -> Served: ...

    def shadow(self, model_name: str, inputs: list[Input]) -> Served | None: ...


# ---- the app -------------------------------------------------------------------------------


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
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


def create_app(
    settings: Settings,
    client: Any = None,
    predictor: Predictor | None = None,
    prediction_log: Any = None,
    review_worker: bool = True,
    extend: Callable[[Any], None] | None = None,
):
    """Build the app. ``extend(app)`` adds routes of a later stage (``flywheel serve`` adds the
    admin routes of ``orchestration.admin_api``: erasure and lineage). ``client`` is a
    FeedbackClient and ``prediction_log`` a ``pipelines.predictions.PredictionLog`` (made on
    first use if omitted); without a ``predictor`` ``/v1/predict`` answers 503.
    ``review_worker``: keep the review queue in step with the review topic and send agreed
    answers while the app runs (``review_api``)."""
    from fastapi import BackgroundTasks, FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from pipelines.http_metrics import FEEDBACK, PREDICTIONS

    state: dict[str, Any] = {"client": client, "log": prediction_log, "queue": None}

    @asynccontextmanager
    async def lifespan(_app):
        worker = ReviewWorker(settings, get_queue(), get_client) if review_worker else None
        if worker is not None:
            worker.start()
        yield
        if worker is not None:
            worker.stop()
        for name in ("client", "log", "queue"):
            if state[name] is not None:
                state[name].close()

    app = FastAPI(
        title="Flywheel",
        version="1",
        description=(
            "Feedback in (`/v1/feedback`), predictions out (`/v1/predict`), the review queue "
            "(`/v1/review`, and the page at `/review`)."
        ),
        lifespan=lifespan,
        # no /docs or /redoc: FastAPI's pages load scripts from a CDN, on the same origin as
        # /review; /openapi.json is the document (any OpenAPI viewer reads it)
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None
    limit = settings.http.max_body_bytes
    # with a token, both POST endpoints document the bearer scheme and their 401 answer
    guarded: dict[str, Any] = {"security": [{"bearer": []}]} if token is not None else {}
    auth = (401,) if token is not None else ()

    def get_client():
        if state["client"] is None:
            state["client"] = FeedbackClient(settings)
        return state["client"]

    def get_queue():
        if state["queue"] is None:
            state["queue"] = ReviewQueue(settings)
        return state["queue"]

    def get_log():
        if state["log"] is None:
            state["log"] = PredictionLog(settings)
        return state["log"]

    def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": code, "message": message, **extra}, status_code=status)

    def hidden(status: int, code: str, message: str, exc: BaseException) -> JSONResponse:
        """A failure of something behind the app (Kafka, MLflow, a store): the client gets a
        generic message and an error id; the log gets the details under that id, redacted."""

        error_id = uuid.uuid4().hex[:12]
        logging.getLogger("flywheel.http").warning(
            "error %s (%s): %s: %s", error_id, code, type(exc).__name__, redact_text(str(exc))
        )
        return error(
            status, code, f"{message} (error id {error_id}: the server's log says more)", error_id=error_id
        )

    async def read_json(request: Request) -> tuple[Any, JSONResponse | None]:
        """The body as JSON data, after the token and size checks; or the error answer."""
        if token is not None and not bearer_ok(request):
            return None, error(
                401, "unauthorized", "send 'Authorization: Bearer <token>' with the configured token"
            )
        if not is_json(request.headers.get("content-type")):
            return None, error(
                415, "json_only", "send the body as JSON, with 'Content-Type: application/json'"
            )
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

    def operator_only(request: Request) -> JSONResponse | None:
        """With ``http.auth_token`` set, the operational routes need it too (they name models,
        versions, topics and queue depths)."""
        if token is None or bearer_ok(request):
            return None
        return error(401, "unauthorized", "send 'Authorization: Bearer <token>' with the configured token")

    def bearer_ok(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return (
            token is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), token.encode())
        )

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request):
        """Prometheus text format: this process's counters and whatever else is registered
        (``flywheel serve`` adds the loop's state, ``orchestration.metrics``)."""
        from fastapi.responses import Response
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        refused = operator_only(request)
        if refused is not None:
            return refused
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(request: Request):
        refused = operator_only(request)
        return refused if refused is not None else JSONResponse(app.openapi())

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "degraded: Kafka deliveries are failing"}},
        summary="liveness and Kafka delivery",
    )
    def healthz():
        # a client given to create_app may be any object with submit_many (tests): no health then
        healths = [h for n in ("client", "log") if (h := getattr(state[n], "health", None)) is not None]
        failing = [h for h in healths if h.degraded]
        body = {
            "status": "degraded" if failing else "ok",
            "kafka": settings.bootstrap_servers,
            "reason": failing[0].last_error if failing else None,
            "producer_rebuilds": sum(h.rebuilds for h in healths),
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    @app.post(
        "/v1/feedback",
        status_code=202,
        response_model=Accepted,
        responses=_responses(*auth, 403, 413, 415, 422, 503),
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
        data, problem = await read_json(request)
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
        refused = await run_in_threadpool(_forgotten_problems, get_client(), events)
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

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=_responses(*auth, 403, 404, 413, 415, 422, 503),
        summary="predict with a model's champion",
        openapi_extra={
            **guarded,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
            },
        },
    )
    async def post_predict(request: Request, background: BackgroundTasks):
        data, problem = await read_json(request)
        if problem is not None:
            return problem
        inputs = data.get("inputs") if isinstance(data, dict) else None
        if isinstance(inputs, list) and len(inputs) > settings.serving.max_batch:  # before decoding any image
            return error(
                413, "too_many", f"{len(inputs)} inputs; at most {settings.serving.max_batch} per request"
            )
        try:  # in a worker thread: each image is decoded whole to be checked
            req = await run_in_threadpool(PredictRequest.model_validate, data)
        except ValidationError as exc:
            found = exc.errors(include_url=False)
            problems = [
                {
                    "index": _index(e["loc"]),
                    "field": ".".join(str(p) for p in e["loc"])[:200] or "<body>",
                    "message": e["msg"][:500],
                }
                for e in found[:MAX_PROBLEMS]
            ]
            return error(
                422,
                "invalid_request",
                f"{len(found)} problem(s); nothing was predicted",
                errors=problems,
                errors_total=len(found),
            )
        if predictor is None:
            return error(503, "not_serving", "this app was started without a predictor; run `flywheel serve`")
        try:
            served = await run_in_threadpool(predictor.predict, req.model_name, req.inputs)
        except NotServed as exc:
            if exc.status >= 500:  # the registry or the model's store: their errors may name credentials
                return hidden(exc.status, exc.code, "the model cannot answer right now; retry", exc)
            return error(exc.status, exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - any model failure is a 503 with an error id, logged
            return hidden(503, "prediction_failed", "the model failed on these inputs", exc)

        when = now_utc()
        records = [
            PredictionRecord(
                new_prediction_id(), served.model_name, served.version, served.task, when, answer
            )
            for answer in served.answers
        ]
        try:
            await run_in_threadpool(get_log().log, records)
        except (SpoolFull, JournalWriteError) as exc:
            return error(503, exc.code, f"the prediction could not be logged, so it is not returned ({exc})")
        except BrokerError as exc:
            return hidden(
                503,
                "prediction_log_unavailable",
                "the prediction could not be logged, so it is not returned; retry",
                exc,
            )
        PREDICTIONS.labels(served.model_name, str(served.version)).inc(len(records))
        share = settings.serving.shadow_share
        if share > 0 and random.random() < share:
            background.add_task(_shadow, predictor, get_log, req, records)
        return {
            "model_name": served.model_name,
            "model_version": str(served.version),
            "predictions": [{"prediction_id": r.prediction_id, **r.prediction} for r in records],
        }

    add_review_routes(app, settings, get_queue, get_client, ErrorBody)
    if extend is not None:
        extend(app)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with the contract models the raw-body endpoints read, this
        server's limits and, with a token, its bearer scheme."""
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in (FeedbackEvent, PredictRequest):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, part in {**schema.pop("$defs", {}), model.__name__: schema}.items():
                if schemas.setdefault(name, part) != part:
                    raise RuntimeError(
                        f"two different schemas are named {name!r} in the OpenAPI document; "
                        "rename one of the models"
                    )
        schemas["PredictRequest"]["properties"]["inputs"]["maxItems"] = settings.serving.max_batch
        schemes = components.setdefault("securitySchemes", {})
        if token is not None:
            schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        schemes["reviewer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "a reviewer's token (review.reviewers); the /review page sends it as a cookie",
        }
        schemas["ReviewAnswer"] = ReviewAnswerIn.model_json_schema()
        if settings.http.admin_token is not None or extend is not None:
            schemes["admin"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "http.admin_token: erasure and lineage, apart from the feedback token",
            }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document
    return app


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


def _index(loc: tuple) -> int:
    """The input a validation error is about (0 for the request itself)."""
    return loc[1] if len(loc) > 1 and loc[0] == "inputs" and isinstance(loc[1], int) else 0


def _shadow(predictor: Predictor, get_log, req: PredictRequest, served_records: list) -> None:
    """The candidate answers the same inputs; logged beside the champion's, never returned.
    Runs after the answer was sent; a failure is logged and costs the client nothing."""

    try:
        shadow = predictor.shadow(req.model_name, req.inputs)
        if shadow is None:
            return
        when = now_utc()
        get_log().log(
            [
                PredictionRecord(
                    new_prediction_id(),
                    shadow.model_name,
                    shadow.version,
                    shadow.task,
                    when,
                    a,
                    r.prediction_id,
                )
                for a, r in zip(shadow.answers, served_records, strict=True)
            ]
        )
    except Exception as exc:  # noqa: BLE001 - the shadow must never hurt serving; it is reported
        logging.getLogger("flywheel.serving").warning(
            "shadow prediction failed: %s: %s", type(exc).__name__, exc
        )


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback without a token: anyone who can reach the port could
    post training labels. ConfigError saying what to set."""

    if settings.http.auth_token is None and not is_loopback(settings.http.host):
        raise ConfigError(
            f"http.host is {settings.http.host!r}, reachable beyond this machine, and http.auth_token "
            "is unset: anyone reaching the port could post training labels. Set http.auth_token "
            "(FLYWHEEL_HTTP__AUTH_TOKEN, 16+ random characters) or bind http.host to 127.0.0.1"
        )


def serve(settings: Settings, predictor: Predictor | None = None, extend=None) -> None:
    import uvicorn

    check_exposure(settings)
    app = create_app(settings, predictor=predictor, extend=extend)
    from pipelines.http_server import protocol_for

    uvicorn.run(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level="info",
        http=protocol_for(settings),  # header deadline and connection cap (pipelines/http_server.py)
        h11_max_incomplete_event_size=64 * 1024,  # request line and headers: 64 KiB at most
    )
