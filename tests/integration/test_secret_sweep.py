"""Issue 27, item 4: a distinctive secret in every secret setting; every error path that can
be driven without the services (MLflow, Kafka, the webhook all down); then every reply, log
line and file under the state dir is searched for it: zero hits."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from flywheel.broker import free_port
from flywheel.settings import load_settings
from orchestration.monitor import MonitorResult, alert
from orchestration.serving import ChampionPredictor
from pipelines.http_api import create_app
from tests.helpers import make_event

SECRET = "Zq8-SECRET-7xK"


def test_no_secret_reaches_a_reply_a_log_or_a_file(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the server is down: say so at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    dead = free_port()
    s = load_settings(
        state_dir=tmp_path / "state",
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "delivery_timeout_s": 2},
        mlflow={
            "tracking_uri": f"http://flywheel:{SECRET}a@127.0.0.1:{dead}",
            "username": "flywheel",
            "password": SECRET + "b",
        },
        feast={"redis_password": SECRET + "c"},
        monitor={"webhook_url": f"http://127.0.0.1:{dead}/hooks/{SECRET}d?access_token={SECRET}e"},
        review={"reviewers": {"alice": {"token": SECRET + "f-token-long-enough"}}},
    )
    caplog.set_level(logging.DEBUG)
    replies = []
    app = create_app(s, predictor=ChampionPredictor(s), review_worker=False)
    with TestClient(app) as http:
        replies.append(http.post("/v1/predict", json={"model_name": "sentiment", "inputs": [{"text": "x"}]}))
        replies.append(http.post("/v1/feedback", json=make_event(1)))
        replies.append(http.get("/healthz"))
        replies.append(http.get("/metrics"))
        replies.append(http.post("/review/session", json={"token": "wrong"}))
    said: list[str] = []
    alert(s, MonitorResult("sentiment", "rolled-back", "worse", None, 2), said.append)
    assert [r.status_code for r in replies][:2] == [503, 503], [r.text for r in replies]
    texts = [r.text for r in replies] + said + caplog.messages + [str(r.exc_info) for r in caplog.records]
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file() and p.name != "flywheel.resolved.yaml"]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    leaks = [t[:300] for t in texts if SECRET in t]
    assert leaks == []
