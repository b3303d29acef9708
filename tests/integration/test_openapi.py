"""The app against its own ``/openapi.json``, with schemathesis, in process (ASGI).

Feedback goes to the session's real broker, predictions to the real prediction log; the
predictor is a stand-in that knows one model, ``known``. Checks on every generated answer:

- ``not_a_server_error``: no 5xx while the broker is up (a 503 is only expected below,
  from the explicit cases that make it happen);
- ``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``:
  every answer is documented, with its media type and body;
- ``negative_data_rejection``: a body the document forbids is refused (4xx), since the
  document is built from the same models the app validates with.

Not ``positive_data_acceptance``: the contract holds rules no JSON Schema states (a real PNG
behind the base64, visible text, an event time not in the future), so a schema-valid body
may rightly get the documented 422.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans

from flywheel.broker import free_port
from flywheel.settings import load_settings
from pipelines.http_api import create_app
from pipelines.predict_api import NotServed, Served
from tests.helpers import make_event

pytestmark = [pytest.mark.integration]

CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = [not_a_server_error, *CONFORMANCE, negative_data_rejection]
# schemathesis's default, plus 413: how the app refuses a batch over the documented maxItems
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
            }
        }
    }
)
FUZZ = hypothesis.settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],  # generating contract events is slow on a busy machine
)
TOKEN = "s3cret-token-123456"


class KnownPredictor:
    """The ``Predictor`` protocol: one model, ``known``, that always says ``positive``."""

    def predict(self, model_name, inputs):
        if model_name != "known":
            raise NotServed(404, "no_champion", f"no model {model_name!r}; register and promote one first")
        return Served(
            "known", 1, "text-classification", [{"label": "positive", "confidence": 0.75}] * len(inputs)
        )

    def shadow(self, model_name, inputs):
        return None


def limited(settings, **http):
    """``settings`` with small limits, so generated batches cross them."""
    http = settings.http.model_copy(update={"max_batch": 3, "max_body_bytes": 64 * 1024, **http})
    serving = settings.serving.model_copy(update={"max_batch": 4})
    return settings.model_copy(update={"http": http, "serving": serving})


@pytest.fixture
def load():
    """Load the document of ``create_app(settings, ...)``; each app's clients are closed after the test."""

    def load_schema(settings, **kwargs):
        token = settings.http.auth_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        app = create_app(settings, **kwargs)
        return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG, headers=headers)

    yield load_schema
    shutdown_lifespans()  # the app's lifespan closes its FeedbackClient and PredictionLog


def fuzz(schema, label: str, mode: GenerationMode, headers=None) -> dict[int, int]:
    """Run generated requests at one operation; every answer must pass CHECKS. Returns the
    count of answers per status."""
    seen: dict[int, int] = {}

    @FUZZ
    @given(case=schema.find_operation_by_label(label).as_strategy(generation_mode=mode))
    def run(case):
        status = case.call_and_validate(headers=dict(headers or {}), checks=CHECKS).status_code
        seen[status] = seen.get(status, 0) + 1

    run()
    return seen


def answer(schema, label: str, status: int, body=None, headers=None, **kwargs):
    """Send ``body``; the answer must have ``status`` and be documented with its body."""
    case = schema.find_operation_by_label(label).Case(body=body, media_type="application/json")
    response = case.call(headers=headers, **kwargs)
    assert response.status_code == status, response.text
    case.validate_response(response, checks=CONFORMANCE)
    return response.json()


def test_the_document_is_valid_openapi_3_1():
    doc = create_app(load_settings()).openapi()
    assert doc["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema

    def refs(node):
        if isinstance(node, dict):
            yield from ([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(doc))
    assert "#/components/schemas/FeedbackEvent" in found
    assert {ref.rsplit("/", 1)[-1] for ref in found} <= set(doc["components"]["schemas"])
    assert all(ref.startswith("#/components/schemas/") for ref in found)
    statuses = {path: set(op["responses"]) for path, ops in doc["paths"].items() for op in ops.values()}
    assert statuses == {
        "/healthz": {"200", "503"},
        "/v1/feedback": {"202", "403", "413", "415", "422", "503"},
        "/v1/predict": {"200", "403", "404", "413", "415", "422", "503"},
        # the review API (FastAPI documents 422 for every route with path parameters; 429 wherever
        # 401 is an answer: http_guard.GuessLimit)
        "/v1/review/models": {"200", "401", "429"},
        "/v1/review/{model}/next": {"200", "401", "404", "422", "429"},
        "/v1/review/{model}/{item}": {"200", "401", "403", "404", "409", "413", "415", "422", "429"},
        "/v1/review/{model}/answers/last": {"200", "401", "404", "409", "415", "422", "429"},
        "/v1/review/{model}/escalated": {"200", "401", "404", "422", "429"},
        "/v1/review/{model}/stats": {"200", "401", "422", "429"},
    }
    assert "#/components/schemas/ReviewAnswer" in found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers(settings, load, mode):
    schema = load(limited(settings), predictor=KnownPredictor())
    if mode is GenerationMode.POSITIVE:  # it takes nothing, so there is nothing to negate
        assert set(fuzz(schema, "GET /healthz", mode)) == {200}
    for label in ("POST /v1/feedback", "POST /v1/predict"):
        seen = fuzz(schema, label, mode)
        assert set(seen) <= {200, 202, 404, 413, 422}, (label, seen)


def test_each_documented_answer_happens_and_matches_the_document(settings, load):
    schema = load(limited(settings), predictor=KnownPredictor())
    feedback, predict = "POST /v1/feedback", "POST /v1/predict"

    # feedback, confirmed by the real broker
    assert answer(schema, feedback, 202, make_event(1)) == {"accepted": ["evt-000001"]}
    assert answer(schema, feedback, 202, [make_event(2), make_event(3)])["accepted"] == [
        "evt-000002",
        "evt-000003",
    ]
    assert answer(schema, feedback, 413, [make_event(i) for i in range(4)])["error"] == "too_many"
    assert answer(schema, feedback, 413, make_event(4, source="x" * 70_000))["error"] == "too_large"
    assert answer(schema, feedback, 422, [])["error"] == "empty"
    bad = make_event(5, prediction={"label": "positive", "confidence": 7})
    assert answer(schema, feedback, 422, bad)["errors"][0]["field"] == "prediction.confidence"
    assert answer(schema, feedback, 422, data=b"{nope")["error"] == "not_json"

    # predictions, logged to the real prediction log
    known = {"model_name": "known", "inputs": [{"text": "fine"}, {"text": "also fine"}]}
    body = answer(schema, predict, 200, known)
    assert [p["label"] for p in body["predictions"]] == ["positive", "positive"]
    assert answer(schema, predict, 404, {**known, "model_name": "other"})["error"] == "no_champion"
    assert answer(schema, predict, 413, {**known, "inputs": [{"text": "x"}] * 5})["error"] == "too_many"
    assert answer(schema, predict, 422, {**known, "inputs": []})["error"] == "invalid_request"

    # 503: no predictor, and no broker
    no_predictor = load(settings)
    assert answer(no_predictor, predict, 503, known)["error"] == "not_serving"
    nowhere = settings.model_copy(update={"broker": settings.broker.model_copy(update={"port": free_port()})})
    assert answer(load(nowhere), feedback, 503, make_event(6))["error"] == "kafka_unavailable"


def test_with_a_token_401_is_documented_and_the_token_is_enforced(settings, load):
    schema = load(limited(settings, auth_token=SecretStr(TOKEN)), predictor=KnownPredictor())
    schemes = schema.raw_schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert set(schemes) == {"bearer", "reviewer"}  # reviewers have their own tokens
    feedback, predict = "POST /v1/feedback", "POST /v1/predict"
    known = {"model_name": "known", "inputs": [{"text": "fine"}]}

    assert answer(schema, feedback, 401, make_event(1))["error"] == "unauthorized"
    assert answer(schema, predict, 401, known, headers={"Authorization": "Bearer nope"})["error"] == (
        "unauthorized"
    )
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        # generated wrong tokens count as guesses: past 10, 429 (documented; http_guard.GuessLimit)
        seen = set(fuzz(schema, feedback, mode))
        assert 401 in seen and seen <= {401, 429}, seen
    # a fresh app: this client's address is over the failed-credentials limit on the first one
    schema = load(limited(settings, auth_token=SecretStr(TOKEN)), predictor=KnownPredictor())
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert set(fuzz(schema, predict, GenerationMode.POSITIVE, headers=good)) <= {200, 404, 413, 422}
    # with the token: accepted; ignored_auth resends it with no and a wrong token, which must be refused
    for label, body, status in ((feedback, make_event(2), 202), (predict, known, 200)):
        case = schema.find_operation_by_label(label).Case(body=body, media_type="application/json")
        response = case.call_and_validate(headers=dict(good), checks=[*CONFORMANCE, ignored_auth])
        assert response.status_code == status, response.text
