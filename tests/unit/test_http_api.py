"""Request handling of the HTTP endpoint, with a fake client in place of Kafka."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from flywheel.settings import load_settings
from pipelines.http_api import create_app
from pipelines.sdk import Failed, SubmitResult
from tests.helpers import make_event


class FakeClient:
    def __init__(self, fail: bool = False):
        self.sent: list = []
        self.fail = fail

    def submit_many(self, events):
        if self.fail:
            return SubmitResult(failed=[Failed(i, e.event_id, "timed out") for i, e in enumerate(events)])
        self.sent.extend(events)
        return SubmitResult(accepted=[e.event_id for e in events])

    def close(self):
        pass


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def fake():
    return FakeClient()


def app_with(client, **http):
    return TestClient(create_app(load_settings(http=http), client=client))


def test_single_and_batch_are_accepted(fake):
    api = app_with(fake)
    r = api.post("/v1/feedback", json=make_event(1))
    assert r.status_code == 202 and r.json() == {"accepted": ["evt-000001"]}
    r = api.post("/v1/feedback", json=[make_event(2), make_event(3)])
    assert r.status_code == 202 and r.json()["accepted"] == ["evt-000002", "evt-000003"]
    assert len(fake.sent) == 3


def test_bad_confidence_is_422_naming_the_field_and_nothing_is_sent(fake):
    api = app_with(fake)
    bad = make_event(2, prediction={"label": "positive", "confidence": 7})
    r = api.post("/v1/feedback", json=[make_event(1), bad])
    assert r.status_code == 422
    body = r.json()
    assert body["errors"] == [
        {
            "index": 1,
            "field": "prediction.confidence",
            "message": "Input should be less than or equal to 1",
        }
    ]
    assert fake.sent == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{nope", "not_json"),
        (b'{"c": NaN}', "not_json"),
        (b"\xff\xfe{}", "not_utf8"),
        (b'{"a": 1, "a": 2}', "duplicate_key"),
        (b"[" * 50_000 + b"]" * 50_000, "too_deep"),
        (b'{"x":' * 3000 + b"1" + b"}" * 3000, "too_deep"),
        (b"1" * 5000, "not_json"),  # past Python's int digit limit
        (b"", "not_json"),
    ],
)
def test_unparsable_bodies_are_422_with_the_reason(fake, body, code):
    r = app_with(fake).post("/v1/feedback", content=body, headers=JSON)
    assert r.status_code == 422 and r.json()["error"] == code, r.text
    assert fake.sent == []


def test_empty_and_too_many(fake):
    api = app_with(fake, max_batch=2)
    assert api.post("/v1/feedback", json=[]).status_code == 422
    assert api.post("/v1/feedback", json=[make_event(i) for i in range(3)]).status_code == 413


def test_body_limit(fake):
    api = app_with(fake, max_body_bytes=2048)
    r = api.post(
        "/v1/feedback", content=json.dumps([make_event(i) for i in range(20)]).encode(), headers=JSON
    )
    assert r.status_code == 413 and "2048" in r.json()["message"]


def test_bearer_token(fake):
    api = app_with(fake, auth_token="s3cret-token-123456")
    assert api.post("/v1/feedback", json=make_event()).status_code == 401
    wrong = api.post("/v1/feedback", json=make_event(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = api.post("/v1/feedback", json=make_event(), headers={"Authorization": "Bearer s3cret-token-123456"})
    assert ok.status_code == 202
    assert api.get("/healthz").status_code == 200


def test_undelivered_events_are_503_with_ids():
    r = app_with(FakeClient(fail=True)).post("/v1/feedback", json=make_event(5))
    assert r.status_code == 503
    assert r.json()["failed"] == [{"event_id": "evt-000005", "error": "timed out"}]


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/predict"])
def test_cross_site_writes_are_refused(fake, path):
    """Issue 27, item 3: any web page could post training labels with a simple request."""
    api = app_with(fake)
    body = json.dumps(make_event(1)).encode()
    # a form or text/plain POST: what a page of another site can send without a preflight
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = api.post(path, content=body, headers=headers)
        assert r.status_code == 415 and r.json()["error"] == "json_only", (ctype, r.text)
    evil = api.post(path, content=body, headers={**JSON, "Origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"] == "cross_site"
    opaque = api.post(path, content=body, headers={**JSON, "Origin": "null"})
    assert opaque.status_code == 403
    assert fake.sent == []
    # the same origin, and clients that are not browsers (no Origin), still write
    same = api.post("/v1/feedback", content=body, headers={**JSON, "Origin": "http://testserver"})
    assert same.status_code == 202
    assert (
        api.post(
            "/v1/feedback", content=body, headers={"content-type": "Application/JSON; charset=utf-8"}
        ).status_code
        == 202
    )


def test_no_open_server_beyond_loopback_without_a_token():
    from flywheel.errors import ConfigError
    from pipelines.http_api import check_exposure

    with pytest.raises(ConfigError, match=r"http\.auth_token"):
        check_exposure(load_settings(http={"host": "0.0.0.0"}))
    check_exposure(load_settings(http={"host": "0.0.0.0", "auth_token": "a" * 20}))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(load_settings(http={"host": host}))
    # an empty token (an empty secrets file exported as FLYWHEEL_HTTP__AUTH_TOKEN) or a short one
    # would leave every route open: refused when the settings load, with how to make one
    for weak in ("", "   ", "x", "a" * 15):
        with pytest.raises(ConfigError, match=r"http\.auth_token needs at least 16 characters"):
            load_settings(http={"host": "0.0.0.0", "auth_token": weak})


def test_a_batch_with_a_million_problems_gets_a_short_reply_and_the_loop_stays_free(fake):
    """Issue 27, item 2: 1,000 objects with ~935 unknown keys each (8.4 MB) once got an 89 MB
    422 built on the event loop. Now: the first 100 problems and the count, validated in a
    worker thread, so /healthz answers while the batch is being checked."""
    import threading
    import time

    import httpx
    import uvicorn

    from flywheel.broker import free_port

    port = free_port()
    app = create_app(load_settings(http={"port": port}), client=fake, review_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        item = {**make_event(0), **{f"{k:03d}": 1 for k in range(935)}}
        batch = [{**item, "event_id": f"e-{i}"} for i in range(1000)]
        body = json.dumps(batch, separators=(",", ":")).encode()
        assert 7_500_000 < len(body) < 8 * 1024 * 1024
        result = {}

        def post():
            result["r"] = httpx.post(
                f"http://127.0.0.1:{port}/v1/feedback", content=body, headers=JSON, timeout=120
            )
            result["done"] = time.monotonic()

        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(0.5)  # the body is in, validation under way
        started = time.monotonic()
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        answered = time.monotonic()
        poster.join(120)
        r = result["r"]
        assert health.status_code == 200
        assert r.status_code == 422 and len(r.content) < 64 * 1024
        reply = r.json()
        assert len(reply["errors"]) == 100 and reply["errors_total"] == 935 * 1000
        assert answered < result["done"], "/healthz waited for the batch's validation"
        print(f"/healthz took {1000 * (answered - started):.0f} ms while the batch was validated")
        assert fake.sent == []
    finally:
        server.should_exit = True
        thread.join(10)


def test_operational_routes_need_the_token_and_no_cdn_page_is_served(fake):
    """Issue 27, item 7."""
    open_app = app_with(fake)
    assert open_app.get("/openapi.json").status_code == 200
    assert open_app.get("/metrics").status_code == 200
    guarded = app_with(fake, auth_token="s3cret-token-123456")
    for path in ("/metrics", "/openapi.json"):
        assert guarded.get(path).status_code == 401, path
        ok = guarded.get(path, headers={"Authorization": "bearer s3cret-token-123456"})
        assert ok.status_code == 200, path
    for app in (open_app, guarded):
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert app.get(path).status_code == 404, path
    assert "cdn" not in open_app.get("/review").text.lower()


def test_a_client_gone_mid_body_is_one_log_line_not_a_traceback(caplog):
    """Issue 27, item 8."""
    import asyncio
    import logging

    from starlette.requests import ClientDisconnect

    from pipelines.http_guard import BodyProblem, read_body

    class Gone:
        headers = {"content-length": "100"}
        client = type("C", (), {"host": "10.0.0.9"})()
        method = "POST"
        url = type("U", (), {"path": "/v1/feedback"})()

        async def stream(self):
            yield b'{"a"'
            raise ClientDisconnect()

    caplog.set_level(logging.WARNING)  # what `flywheel serve` shows: the line must be at that level
    with pytest.raises(BodyProblem) as problem:
        asyncio.run(read_body(Gone(), 1000, 5))
    assert problem.value.code == "client_disconnect"
    lines = [r for r in caplog.records if r.name == "flywheel.http"]
    assert (
        len(lines) == 1 and lines[0].exc_info is None and "went away after 4 bytes" in lines[0].getMessage()
    )


def test_failed_credentials_are_limited_per_address_on_every_route(fake):
    """Issue 27, attacker's re-run: bearer guesses had no limit (only the page's sign-in had)."""
    from orchestration.admin_api import add_admin_routes

    admin = "admin-token-0123456789"
    settings = load_settings(http={"auth_token": "s3cret-token-123456", "admin_token": admin})
    api = TestClient(create_app(settings, client=fake, extend=lambda app: add_admin_routes(app, settings)))
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    routes = [
        ("post", "/v1/feedback"),
        ("get", "/metrics"),
        ("get", "/v1/lineage/events/e1"),
        ("get", "/v1/review/models"),
        ("post", "/v1/predict"),
    ]

    def call(method, path, headers):
        if method == "post":
            return api.post(path, headers=headers, json={})
        return api.get(path, headers=headers)

    codes = [call(m, path, wrong).status_code for m, path in routes * 2]
    assert codes == [401] * 10
    for method, path in routes:  # the eleventh guess, anywhere, and even the right token: 429
        blocked = call(method, path, {"Authorization": f"Bearer {admin}"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0, path
        assert blocked.json()["error"] == "too_many_attempts"
    assert api.get("/healthz").status_code == 200  # no credentials: not limited


def test_empty_token_is_not_an_open_server_and_healthz_names_nothing_with_a_token(fake):
    token_app = app_with(fake, auth_token="s3cret-token-123456")
    body = token_app.get("/healthz").json()
    assert body["status"] == "ok" and body["kafka"] is None
    assert app_with(fake).get("/healthz").json()["kafka"]  # without a token (loopback): the address


def test_without_a_token_only_loopback_host_names_are_answered(fake):
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 sends Host and Origin
    evil.example, which match each other; the host name is what tells it apart."""
    from pipelines.http_guard import LoopbackHosts

    app = LoopbackHosts(create_app(load_settings(), client=fake))
    for base in ("http://127.0.0.1:8088", "http://localhost:8088", "http://[::1]:8088"):
        assert TestClient(app, base_url=base).post("/v1/feedback", json=make_event(1)).status_code == 202, (
            base
        )
    rebound = TestClient(app, base_url="http://evil.example:8088")
    r = rebound.post("/v1/feedback", json=make_event(2), headers={"Origin": "http://evil.example:8088"})
    assert r.status_code == 421 and r.json()["error"] == "host_not_allowed"
    assert rebound.get("/openapi.json").status_code == 421


def test_a_failing_lineage_store_is_a_503_with_an_error_id_not_a_traceback(monkeypatch, caplog):
    import logging

    from orchestration import admin_api

    def broken(*_a, **_k):
        raise RuntimeError("postgresql://u:Zq9SECRETqq@db/x is down")

    monkeypatch.setattr(admin_api, "event_lineage", broken)
    admin = "admin-token-0123456789"
    settings = load_settings(http={"admin_token": admin})
    api = TestClient(create_app(settings, extend=lambda app: admin_api.add_admin_routes(app, settings)))
    caplog.set_level(logging.WARNING)
    r = api.get("/v1/lineage/events/e1", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 503 and r.json()["error"] == "lineage_unavailable" and r.json()["error_id"]
    assert "Zq9SECRETqq" not in r.text and "Zq9SECRETqq" not in caplog.text
    assert not [rec for rec in caplog.records if rec.exc_info]
