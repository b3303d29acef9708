"""POST /v1/predict request handling, with a fake predictor and a fake prediction log."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flywheel.errors import BrokerError
from flywheel.settings import load_settings
from pipelines.http_api import create_app
from pipelines.predict_api import NotServed, Served


class FakePredictor:
    def __init__(self, shadow_version: int | None = None):
        self.shadow_version = shadow_version

    def predict(self, model_name, inputs):
        if model_name != "sentiment":
            raise NotServed(404, "no_champion", f"model {model_name!r} has no champion version")
        if any(i.text is None for i in inputs):
            raise NotServed(
                422, "wrong_input", "sentiment is a text-classification model: inputs need 'text'"
            )
        answers = [
            {"label": "positive" if "good" in i.text else "negative", "confidence": 0.75} for i in inputs
        ]
        return Served(model_name, 3, "text-classification", answers)

    def shadow(self, model_name, inputs):
        if self.shadow_version is None:
            return None
        answers = [{"label": "neutral", "confidence": 0.5} for _ in inputs]
        return Served(model_name, self.shadow_version, "text-classification", answers)


class FakeLog:
    def __init__(self, fail: bool = False):
        self.records: list = []
        self.fail = fail

    def log(self, records):
        if self.fail:
            raise BrokerError("Kafka did not confirm 1 prediction record(s) within 35s")
        self.records.extend(records)

    def close(self):
        pass


def api(predictor=None, log=None, **sections):
    settings = load_settings(**sections)
    return TestClient(
        create_app(
            settings, client=object(), predictor=predictor or FakePredictor(), prediction_log=log or FakeLog()
        )
    )


def body(*texts: str, model: str = "sentiment") -> dict:
    return {"model_name": model, "inputs": [{"text": t} for t in texts]}


def test_a_batch_is_answered_in_order_and_every_answer_is_logged_first():
    log = FakeLog()
    r = api(log=log).post("/v1/predict", json=body("good day", "bad day"))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["model_name"] == "sentiment" and data["model_version"] == "3"
    assert [p["label"] for p in data["predictions"]] == ["positive", "negative"]
    ids = [p["prediction_id"] for p in data["predictions"]]
    assert len(set(ids)) == 2 and [rec.prediction_id for rec in log.records] == ids
    assert all(rec.model_version == 3 and rec.shadow_of is None for rec in log.records)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"model_name": "sentiment"}, "inputs"),
        ({"model_name": "sentiment", "inputs": []}, "inputs"),
        ({"model_name": "sentiment", "inputs": [{"text": "a", "image_png_b64": "x"}]}, "inputs.0"),
        ({"model_name": "bad name!", "inputs": [{"text": "a"}]}, "model_name"),
        ({"model_name": "sentiment", "inputs": [{"text": "ok"}], "extra": 1}, "extra"),
        ([{"text": "a"}], "<body>"),
    ],
)
def test_invalid_requests_list_their_problems_and_predict_nothing(payload, field):
    log = FakeLog()
    r = api(log=log).post("/v1/predict", json=payload)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
    assert any(p["field"].startswith(field) for p in r.json()["errors"]), r.json()
    assert not log.records


def test_limits_auth_and_the_predictors_refusals():
    assert api().post("/v1/predict", json=body(*["x"] * 65)).status_code == 413
    assert api(serving={"max_batch": 100}).post("/v1/predict", json=body(*["x"] * 65)).status_code == 200
    r = api().post("/v1/predict", json=body("x", model="unknown"))
    assert r.status_code == 404 and r.json()["error"] == "no_champion"
    r = api().post("/v1/predict", json={"model_name": "sentiment", "inputs": [{"image_png_b64": "AAAA"}]})
    assert r.status_code == 422  # not a PNG: refused by the contract before the predictor
    guarded = api(http={"auth_token": "s3cret-token-123456"})
    assert guarded.post("/v1/predict", json=body("x")).status_code == 401
    ok = guarded.post("/v1/predict", json=body("x"), headers={"Authorization": "Bearer s3cret-token-123456"})
    assert ok.status_code == 200
    r = api().post("/v1/predict", content=b"\xff\xfe", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "not_utf8"


def test_an_answer_that_cannot_be_logged_is_not_returned():
    r = api(log=FakeLog(fail=True)).post("/v1/predict", json=body("good"))
    assert r.status_code == 503 and r.json()["error"] == "prediction_log_unavailable"
    assert "prediction_id" not in r.text
    r = TestClient(create_app(load_settings(), client=object())).post("/v1/predict", json=body("good"))
    assert r.status_code == 503 and r.json()["error"] == "not_serving"


def test_shadow_predictions_are_logged_beside_the_answer_and_never_returned():
    log = FakeLog()
    r = api(FakePredictor(shadow_version=4), log, serving={"shadow_share": 1.0}).post(
        "/v1/predict", json=body("good")
    )
    assert r.status_code == 200 and r.json()["model_version"] == "3"
    assert "neutral" not in r.text
    served, shadow = log.records
    assert shadow.shadow_of == served.prediction_id and shadow.model_version == 4
    assert shadow.prediction["label"] == "neutral"


def test_a_model_that_fails_answers_503_with_an_error_id_and_logs_the_reason(caplog):
    """Issue 27, item 4: what failed behind the app may name credentials (a tracking URI with
    its password): the client gets an error id, the log the redacted reason under that id."""

    class Broken(FakePredictor):
        def predict(self, model_name, inputs):
            raise RuntimeError("CUDA out of memory at postgresql://mlflow:Pa55-S3CRET@db/mlflow")

    r = api(Broken()).post("/v1/predict", json=body("good"))
    assert r.status_code == 503 and r.json()["error"] == "prediction_failed"
    error_id = r.json()["error_id"]
    assert error_id in r.json()["message"] and "S3CRET" not in r.text and "CUDA" not in r.text
    logged = [m for m in caplog.messages if error_id in m]
    assert logged and "CUDA out of memory" in logged[0] and "S3CRET" not in logged[0]
