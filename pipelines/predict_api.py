"""``POST /v1/predict``: a model's champion answers, and every answer is logged first.

It takes ``{"model_name", "inputs": [...]}`` (:class:`PredictRequest`) and answers one
``prediction_id`` per input, and the version that answered. Every answer is written to the
prediction log (``<prefix>.predictions``) and confirmed by Kafka before it is returned, so
feedback naming only the ``prediction_id`` is joined to it. Which version answers is the
``predictor``'s business (``orchestration.serving.ChampionPredictor`` follows the
``champion`` alias); this module only knows the :class:`Predictor` protocol, so the stage
does not import orchestration.
"""

import logging
import random
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import BackgroundTasks, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool

from flywheel.errors import BrokerError, FlywheelError
from flywheel.events import Input
from flywheel.journal import JournalWriteError, SpoolFull
from flywheel.names import MODEL_NAME_PATTERN
from pipelines.http_body import MAX_PROBLEMS, error, hidden, read_json, responses
from pipelines.http_metrics import PREDICTIONS
from pipelines.predictions import PredictionRecord, new_prediction_id, now_utc


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


def add_predict_routes(app, settings, predictor: Predictor | None, get_log, token: str | None) -> None:
    """Add ``POST /v1/predict`` to ``app``; ``get_log()`` gives the PredictionLog."""

    guarded: dict[str, Any] = {"security": [{"bearer": []}]} if token is not None else {}
    auth = (401,) if token is not None else ()

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=responses(*auth, 403, 404, 413, 415, 422, 503),
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
        data, problem = await read_json(request, settings, token)
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
