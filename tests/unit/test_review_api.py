"""The review API and page through the real FastAPI app (no broker: the worker is off and a
fake client records what would be sent)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from pipelines.http_api import create_app
from pipelines.review import send_due
from pipelines.review_queue import ReviewQueue
from tests.unit.test_review_queue import TOKENS, FakeClient, item, settings_for

BEARER = {name: {"Authorization": f"Bearer {t}"} for name, t in TOKENS.items()}


@pytest.fixture
def app(tmp_path):
    s = settings_for(tmp_path, required=2)
    queue = ReviewQueue(s)
    queue.add([item(1, 0.9), item(2, 0.35, input={"text": "<script>alert(1)</script> meh"}), item(3, 0.6)])
    with TestClient(create_app(s, client=FakeClient(), review_worker=False)) as http:
        yield http, queue


def test_without_a_token_nothing_is_shown_and_a_wrong_token_is_refused(app):
    http, _ = app
    assert http.get("/v1/review/sentiment/next").status_code == 401
    r = http.get("/v1/review/sentiment/next", headers={"Authorization": "Bearer " + "x" * 20})
    assert r.status_code == 401 and "reviewer token" in r.json()["message"]
    assert http.post("/review/session", json={"token": "nope"}).status_code == 401
    page = http.get("/review")
    assert page.status_code == 200 and 'id="signin"' in page.text and "evt-" not in page.text
    assert "script-src 'nonce-" in page.headers["content-security-policy"]


def test_a_reviewer_works_the_queue_most_uncertain_first_and_undoes(app):
    http, _ = app
    r = http.get("/v1/review/sentiment/next", headers=BEARER["alice"])
    body = r.json()
    assert body["item"]["event_id"] == "evt-000002" and body["item"]["choices"] == ["negative", "positive"]
    assert body["item"]["text"].startswith("<script>")  # data, shown as text by the page
    assert body["stats"]["waiting_for_you"] == 3 and body["stats"]["required_reviews"] == 2
    r = http.post("/v1/review/sentiment/evt-000002", json={"label": "negative"}, headers=BEARER["alice"])
    assert r.json()["status"] == "pending" and r.json()["votes"] == 1
    assert (
        http.get("/v1/review/sentiment/next", headers=BEARER["alice"]).json()["item"]["event_id"]
        == "evt-000003"
    )
    r = http.delete("/v1/review/sentiment/answers/last", headers=BEARER["alice"])
    assert r.json() == {"undone": "evt-000002"}
    assert (
        http.get("/v1/review/sentiment/next", headers=BEARER["alice"]).json()["item"]["event_id"]
        == "evt-000002"
    )
    r = http.post("/v1/review/sentiment/evt-000002", json={"label": "furious"}, headers=BEARER["alice"])
    assert r.status_code == 409 and "furious" in r.json()["message"]
    for bad in ({}, {"label": "negative", "skip": True}, {"label": 3}, {"skip": True, "x": 1}):
        r = http.post("/v1/review/sentiment/evt-000002", json=bad, headers=BEARER["alice"])
        assert r.status_code == 422, bad
    assert (
        http.post("/v1/review/sentiment/evt-404", json={"skip": True}, headers=BEARER["alice"]).status_code
        == 404
    )
    r = http.post("/v1/review/sentiment/evt-000002", content=b"{not json", headers=BEARER["alice"])
    assert r.status_code == 422


def test_two_reviewers_agree_through_the_api_and_the_agreed_label_is_sent_with_both(app):
    http, queue = app
    for who in ("alice", "bob"):
        r = http.post("/v1/review/sentiment/evt-000001", json={"label": "positive"}, headers=BEARER[who])
    assert r.json()["status"] == "agreed"
    http.post("/v1/review/sentiment/evt-000003", json={"label": "positive"}, headers=BEARER["alice"])
    http.post("/v1/review/sentiment/evt-000003", json={"label": "negative"}, headers=BEARER["bob"])
    esc = http.get("/v1/review/sentiment/escalated", headers=BEARER["carol"]).json()
    assert esc["lead"] is True and [i["event_id"] for i in esc["items"]] == ["evt-000003"]
    assert esc["items"][0]["answers"] == {"alice": "positive", "bob": "negative"}
    stats = http.get("/v1/review/sentiment/stats", headers=BEARER["alice"]).json()
    assert {r["reviewer"]: r["agreement"] for r in stats["reviewers"]} == {"alice": 0.5, "bob": 0.5}
    client = FakeClient()
    assert send_due(queue, client) == 0  # the page's answers can still be undone
    assert send_due(queue, client, now=time.time() + 11) == 1  # review.undo_window_s = 10 s
    assert client.sent[0]["source"] == "review:alice+bob"


def test_the_page_signs_in_with_a_cookie_and_writes_must_be_json(app):
    http, _ = app
    r = http.post("/review/session", json={"token": TOKENS["bob"]})
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    page = http.get("/review")
    assert 'id="reviewer">bob<' in page.text and "sentiment (3 pending)" in page.text
    assert http.get("/v1/review/models").json() == {"reviewer": "bob", "models": {"sentiment": 3}}
    # a cross-site form can post with the cookie but not as application/json: refused
    r = http.post(
        "/v1/review/sentiment/evt-000001",
        content=b"label=positive",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    assert http.post("/v1/review/sentiment/evt-000001", json={"label": "positive"}).status_code == 200
    http.delete("/review/session")
    assert http.get("/v1/review/models").status_code == 401


def test_no_reviewers_configured_says_how_to_add_them(tmp_path):
    from flywheel.settings import load_settings

    s = load_settings(state_dir=tmp_path)
    with TestClient(create_app(s, client=FakeClient(), review_worker=False)) as http:
        r = http.get("/v1/review/models")
        assert r.status_code == 401 and "review.reviewers" in r.json()["message"]
        assert "No reviewers are configured" in http.get("/review").text


def test_sessions_hold_no_token_and_refuse_forgery_cross_site_writes_and_odd_bytes(app):
    http, _ = app
    assert (
        http.post(
            "/review/session", content=b'{"token": "x"}', headers={"Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    assert (
        http.post(
            "/review/session",
            content=b'{"token": "' + b"\\ud800" * 20 + b'"}',
            headers={"Content-Type": "application/json"},
        ).status_code
        == 401
    )
    big = b'{"token": "' + b"a" * 100_000 + b'"}'
    assert (
        http.post("/review/session", content=big, headers={"Content-Type": "application/json"}).status_code
        == 413
    )
    cookie = http.post("/review/session", json={"token": TOKENS["alice"]}).cookies["flywheel_reviewer"]
    assert TOKENS["alice"] not in cookie and cookie.startswith("alice.")
    _, generation, expiry, signature = cookie.split(".")
    http.cookies.clear()
    http.cookies.set("flywheel_reviewer", f"bob.{generation}.{expiry}.{signature}")  # another reviewer's name
    assert http.get("/v1/review/models").status_code == 401
    http.cookies.clear()
    http.cookies.set("flywheel_reviewer", cookie)
    assert http.get("/v1/review/models").status_code == 200
    r = http.post(
        "/v1/review/sentiment/evt-000001", json={"skip": True}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert http.get("/v1/review/nosuchmodel/next").status_code == 404


def test_ids_like_dot_dot_are_answered_through_the_tilde_prefix(app):
    http, queue = app
    queue.add([item(9, 0.01, event_id="..")])
    assert http.get("/v1/review/sentiment/next", headers=BEARER["alice"]).json()["item"]["event_id"] == ".."
    r = http.post("/v1/review/sentiment/~..", json={"label": "negative"}, headers=BEARER["alice"])
    assert r.status_code == 200 and r.json()["votes"] == 1


def test_the_feedback_endpoint_refuses_events_posing_as_review_labels(app):
    http, _ = app
    from tests.helpers import make_event

    forged = [
        make_event(1, label_source="review"),
        make_event(2, source="review:alice+bob"),
        make_event(3, event_id="evt-000001.review"),
    ]
    r = http.post("/v1/feedback", json=forged)
    assert r.status_code == 422
    assert {(e["index"], e["field"]) for e in r.json()["errors"]} == {
        (0, "label_source"),
        (1, "source"),
        (2, "event_id"),
    }


def test_sessions_any_cookie_is_401_sign_out_revokes_and_failed_sign_ins_are_limited(app):
    """Issue 27, item 6."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    http, _ = app
    cookie = http.post("/review/session", json={"token": TOKENS["alice"]}).cookies["flywheel_reviewer"]
    _, generation, expiry, signature = cookie.split(".")
    hostile = [
        f"alice.{generation}.{'9' * 5000}.{signature}",  # int() refuses 5,000 digits
        f"alice.{generation}.²³.{signature}",  # str.isdigit() says yes, int() says no
        f"alice.{'9' * 5000}.{expiry}.{signature}",
        f"alice.-1.{expiry}.{signature}",
        "alice...",
        "." * 50,
        "\x00",
    ]
    http.cookies.clear()
    for value in hostile:
        raw = {"cookie": b"flywheel_reviewer=" + value.encode("latin-1")}
        assert http.get("/v1/review/models", headers=raw).status_code == 401, value
        assert http.get("/review", headers=raw).status_code == 200

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.characters(codec="ascii", exclude_characters=';\\"\r\n'), max_size=300))
    def fuzz(value):
        http.cookies.clear()
        http.cookies.set("flywheel_reviewer", value)
        assert http.get("/v1/review/models").status_code == 401

    fuzz()

    # sign-out ends the session on the server: the cookie, kept by an attacker, stops working
    http.cookies.clear()
    http.cookies.set("flywheel_reviewer", cookie)
    assert http.get("/v1/review/models").status_code == 200
    assert http.delete("/review/session").status_code == 200
    http.cookies.clear()
    http.cookies.set("flywheel_reviewer", cookie)
    assert http.get("/v1/review/models").status_code == 401
    fresh = http.post("/review/session", json={"token": TOKENS["alice"]}).cookies["flywheel_reviewer"]
    http.cookies.clear()
    http.cookies.set("flywheel_reviewer", fresh)
    assert http.get("/v1/review/models").status_code == 200

    # the bearer scheme in any case (RFC 7235)
    http.cookies.clear()
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Authorization": f"{scheme} {TOKENS['alice']}"}
        assert http.get("/v1/review/models", headers=headers).status_code == 200

    # failed sign-ins: 10 a minute per address, then 429 with Retry-After, even with the right token
    codes = [http.post("/review/session", json={"token": f"wrong-{i}"}).status_code for i in range(10)]
    assert codes == [401] * 10
    blocked = http.post("/review/session", json={"token": TOKENS["alice"]})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0


def test_feedback_accepts_the_bearer_scheme_in_any_case():
    from fastapi.testclient import TestClient

    from flywheel.settings import load_settings
    from tests.helpers import make_event

    http = TestClient(
        create_app(load_settings(http={"auth_token": "s3cret-token-123456"}), client=FakeClient())
    )
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Authorization": f"{scheme} s3cret-token-123456"}
        assert http.post("/v1/feedback", json=make_event(1), headers=headers).status_code == 202
    assert (
        http.post(
            "/v1/feedback", json=make_event(1), headers={"Authorization": "Basic s3cret-token-123456"}
        ).status_code
        == 401
    )
