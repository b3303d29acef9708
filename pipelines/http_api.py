"""The HTTP app (FastAPI): it builds the app from its route groups.

``POST /v1/feedback`` (``pipelines.feedback_api``), ``POST /v1/predict``
(``pipelines.predict_api``), the review queue (``pipelines.review_api``), and here the
operational routes: ``/healthz``, ``/metrics`` and ``/openapi.json`` (both behind the
bearer token when one is set). Every route shares the bearer token, the body-size limit and
the error shape of ``pipelines.http_body`` (``{"error": code, "message": what to do, ...}``);
``/openapi.json`` documents every request body and every status with its body. A later stage
adds routes through ``create_app(extend=...)`` (``flywheel serve`` adds the admin routes of
``orchestration.admin_api``). Run it with ``flywheel serve``.
"""

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field

from flywheel.errors import ConfigError
from flywheel.events import FeedbackEvent
from flywheel.settings import Settings
from pipelines.feedback_api import add_feedback_routes
from pipelines.http_body import bearer_ok, error
from pipelines.http_guard import AUTH_FAILURES, GuessLimit, LoopbackHosts, is_loopback
from pipelines.predict_api import Predictor, PredictRequest, add_predict_routes
from pipelines.predictions import PredictionLog
from pipelines.review_api import ReviewAnswerIn, ReviewWorker, add_review_routes
from pipelines.review_queue import ReviewQueue
from pipelines.sdk import FeedbackClient


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when this app's last Kafka delivery failed")
    kafka: str | None = Field(None, description="the Kafka bootstrap servers (left out with a token set)")
    reason: str | None = Field(
        None, description="degraded: the last delivery error (with a token set, only that delivery fails)"
    )
    producer_rebuilds: int = Field(0, description="times a stuck Kafka producer was replaced")


# ---- the app -------------------------------------------------------------------------------


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
    # with a token, both POST endpoints document the bearer scheme and their 401 answer
    token = settings.http.auth_token.get_secret_value() if settings.http.auth_token else None

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

    def operator_only(request: Request) -> JSONResponse | None:
        """With ``http.auth_token`` set, the operational routes need it too (they name models,
        versions, topics and queue depths)."""
        if token is None or bearer_ok(request, token):
            return None
        return error(401, "unauthorized", "send 'Authorization: Bearer <token>' with the configured token")

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request):
        """Prometheus text format: this process's counters and whatever else is registered
        (``flywheel serve`` adds the loop's state, ``orchestration.metrics``)."""

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
        # /healthz answers without the token (probes send none): with a token set it names no
        # address and no error text (both are in the log and in `flywheel status`)
        reason = failing[0].last_error if failing else None
        body = {
            "status": "degraded" if failing else "ok",
            "kafka": settings.bootstrap_servers if token is None else None,
            "reason": reason if token is None or reason is None else "kafka delivery failing",
            "producer_rebuilds": sum(h.rebuilds for h in healths),
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    app.add_middleware(GuessLimit)  # failed credentials per client address, every route: 429
    add_feedback_routes(app, settings, get_client, token)
    add_predict_routes(app, settings, predictor, get_log, token)
    add_review_routes(app, settings, get_queue, get_client)
    if extend is not None:
        extend(app)

    def openapi() -> dict[str, Any]:
        """FastAPI's document, with the contract models the raw-body endpoints read, this
        server's limits and, with a token, its bearer scheme."""
        if app.openapi_schema:
            return app.openapi_schema

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
        for operations in doc.get("paths", {}).values():  # GuessLimit's answer, wherever 401 is one
            for operation in operations.values():
                answers = operation.get("responses", {})
                if "401" in answers:
                    answers.setdefault(
                        "429",
                        {
                            "description": f"over {AUTH_FAILURES} failed credentials a minute from this "
                            "address (Retry-After says when to try again)",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                            },
                        },
                    )
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document
    return app


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback without a token: anyone who can reach the port could
    post training labels. ConfigError saying what to set."""

    if settings.http.auth_token is None and not is_loopback(settings.http.host):
        raise ConfigError(
            f"http.host is {settings.http.host!r}, reachable beyond this machine, and http.auth_token "
            "is unset: anyone reaching the port could post training labels. Set http.auth_token "
            "(FLYWHEEL_HTTP__AUTH_TOKEN, 16+ random characters) or bind http.host to 127.0.0.1"
        )


def _redact_subject_paths(record: logging.LogRecord) -> bool:
    """The access log names no data subject: ``/v1/subjects/<id>`` is logged as
    ``/v1/subjects/[SUBJECT]`` (an erasure request must not leave the id it erases in a log)."""
    args = record.args
    if isinstance(args, tuple) and len(args) >= 3:
        path = args[2]
        if isinstance(path, str) and path.startswith("/v1/subjects/"):
            record.args = (*args[:2], "/v1/subjects/[SUBJECT]", *args[3:])
    return True


def serve(settings: Settings, predictor: Predictor | None = None, extend=None) -> None:

    check_exposure(settings)
    logging.getLogger("uvicorn.access").addFilter(_redact_subject_paths)
    app = create_app(settings, predictor=predictor, extend=extend)
    if settings.http.auth_token is None:  # loopback only: no other host name (DNS rebinding)
        app = LoopbackHosts(app)
    from pipelines.http_server import protocol_for

    trusted = settings.http.trusted_proxies
    uvicorn.run(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_level="info",
        # X-Forwarded-For only from the proxies named in http.trusted_proxies: anyone else could
        # pick the address the failed-credentials limit counts
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        http=protocol_for(settings),  # header deadline and connection cap (pipelines/http_server.py)
        h11_max_incomplete_event_size=64 * 1024,  # request line and headers: 64 KiB at most
    )
