"""The HTTP app's /metrics: Prometheus text with the app's own counters."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from flywheel.settings import load_settings
from pipelines.http_api import create_app
from tests.helpers import make_event
from tests.unit.test_review_queue import FakeClient


def counters(http) -> dict[tuple, float]:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


def test_feedback_outcomes_are_counted(tmp_path):
    with TestClient(
        create_app(load_settings(state_dir=tmp_path), client=FakeClient(), review_worker=False)
    ) as http:
        before = counters(http)
        assert http.post("/v1/feedback", json=[make_event(1), make_event(2)]).status_code == 202
        assert http.post("/v1/feedback", json=[make_event(3), {"bad": 1}]).status_code == 422
        after = counters(http)

    def delta(outcome):
        key = ("flywheel_http_feedback_events_total", (("outcome", outcome),))
        return after.get(key, 0) - before.get(key, 0)

    assert (delta("accepted"), delta("invalid")) == (2, 2)
