"""The review queue against the real parts: the stream job fills the review topic, the
durable queue survives a broker restart, agreed answers (only) reach Feast, and the page
works in a real headless Chromium."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from feature_repo.store import open_store
from flywheel.broker import EmbeddedBroker, free_port
from flywheel.events import validate_event
from flywheel.kafka import Topics, ensure_topics
from flywheel.model_info import ModelInfo, write_model_info
from flywheel.settings import load_settings
from pipelines import review, review_sync
from pipelines.ingest import Ingestor
from pipelines.records import Origin, RoutedRecord
from pipelines.review_queue import ReviewQueue
from pipelines.sdk import FeedbackClient
from pipelines.stats import read_topic
from tests.helpers import make_event
from tests.integration.kafka_utils import produce_raw
from tests.integration.test_stream_job import run_bounded, settled_accounting
from tests.integration.test_submission import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LABELS = ["negative", "neutral", "positive"]
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789ab"}


def with_reviewers(settings, required: int, **review_settings):
    reviewers = {name: {"token": token} for name, token in TOKENS.items()}
    s = load_settings(
        state_dir=settings.state_dir,
        broker={"port": settings.broker.port},
        kafka={"topic_prefix": settings.kafka.topic_prefix, "delivery_timeout_s": 20},
        review={"reviewers": reviewers, "required_reviews": required, **review_settings},
    )
    write_model_info(s.state_dir, ModelInfo("sentiment", "text-classification", LABELS, ""))
    return s


def unlabelled(i: int, confidence: float, prefix: str = "rv") -> dict:
    return make_event(
        i,
        event_id=f"{prefix}-{i:03d}",
        input={"text": f"is this good? case {i}"},
        prediction={"label": "positive", "confidence": confidence},
        feedback=None,
    )


def routed(event: dict, offset: int) -> bytes:
    return RoutedRecord.of(validate_event(event), True, 0, Origin("t.raw", 0, offset)).to_json().encode()


def ends(settings, topic: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in read_topic(settings, topic):
        out[m.partition()] = max(out.get(m.partition(), 0), m.offset() + 1)
    return out


def test_only_answers_two_reviewers_agree_on_reach_feast_and_readiness(settings):
    """Stream job → review topic → queue; alice and bob agree on one item, disagree on one,
    and only alice answers the third: one review label enters the loop, named for both."""
    from training.dataset import labelled_samples, review_labels

    s = with_reviewers(settings, required=2, undo_window_s=0)
    raw = Topics.from_settings(s).raw
    run_bounded(
        s, produce_raw(s, [json.dumps(unlabelled(i, c)).encode() for i, c in enumerate([0.2, 0.3, 0.4])])
    )
    queue = ReviewQueue(s)
    assert review_sync.sync(queue) == 3
    # the least confident first: 0.2, 0.3, 0.4
    assert [i.event_id for i in queue.pending("sentiment")] == ["rv-000", "rv-001", "rv-002"]
    review.answer(s, queue, "sentiment", "rv-000", "alice", "negative")
    review.answer(s, queue, "sentiment", "rv-000", "bob", "negative")
    review.answer(s, queue, "sentiment", "rv-001", "alice", "negative")
    assert review.answer(s, queue, "sentiment", "rv-001", "bob", "positive").status == "escalated"
    review.answer(s, queue, "sentiment", "rv-002", "alice", "neutral")
    with FeedbackClient(s) as client:
        assert review.send_due(queue, client) == 1
    run_bounded(s, ends(s, raw))  # the review label passes the stream job like any feedback
    a = settled_accounting(s)
    assert a.balanced and (a.raw, a.review, a.clean) == (4, 3, 1), a
    store = open_store(s)
    Ingestor(s, store).run(until_caught_up=True)
    from flywheel.tasks import spec_for

    samples = labelled_samples(s, store, spec_for(s, "text-classification"), "sentiment", None, None)
    assert list(samples["sample_id"]) == ["rv-000.review"] and list(samples["label"]) == ["negative"]
    assert list(samples["source"]) == ["review:alice+bob"]
    assert review_labels(samples["source"]) == {"alice": 1, "bob": 1}
    stats = queue.stats("sentiment")
    assert (stats.sent, stats.escalated, stats.pending) == (1, 1, 1)
    assert {r.reviewer: r.agreement for r in stats.reviewers} == {"alice": 0.5, "bob": 0.5}


def test_the_queue_survives_a_broker_restart_and_reads_the_recreated_topic(tmp_path):
    """The embedded broker keeps topics in memory: after `broker stop/start` the review topic
    is empty and its offsets start again. Items stay in the queue, answers too, and items
    written to the new topic are read even where their offsets equal old ones."""
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    broker.start()
    try:
        s = load_settings(state_dir=tmp_path / "state", broker={"port": broker.port}, kafka={"partitions": 2})
        write_model_info(s.state_dir, ModelInfo("sentiment", "text-classification", LABELS, ""))
        ensure_topics(s)
        topic = Topics.from_settings(s).review
        produce_raw(s, [routed(unlabelled(i, 0.3, "old"), i) for i in range(4)], topic=topic)
        queue = ReviewQueue(s)
        assert review_sync.sync(queue) == 4
        review.answer(s, queue, "sentiment", "old-000", "ann", "neutral", undo_window_s=3600)
        broker.stop()
        broker.start()
        ensure_topics(s)
        assert read_topic(s, topic) == []  # the broker forgot the topic
        queue.close()
        queue = ReviewQueue(s)  # every process restarted too
        assert len(queue.pending("sentiment")) == 3  # old-000 was answered (and waits to be sent)
        assert queue.status("old-000") == "agreed" and queue.get("old-000").votes == 1
        produce_raw(s, [routed(unlabelled(i, 0.3, "new"), i) for i in range(6)], topic=topic)
        assert review_sync.sync(queue, max_records=4) == 4  # a backlog is read over several calls ...
        assert review_sync.sync(queue) == 2  # ... each going on from the last
        assert review_sync.sync(queue) == 0  # read once
        assert len(queue.pending("sentiment")) == 9
    finally:
        broker.stop()


def test_the_page_in_a_real_browser_labels_two_items_by_keyboard(settings, tmp_path):
    """Sign in, see the most uncertain item first, answer two items with keys 1 and 2; both
    answers reach the raw topic as review labels naming the reviewer. Saves a screenshot
    (to $SCREENSHOT_DIR when set, e.g. docs/ for the docs site)."""
    from pipelines.http_api import create_app
    from tests.browser import Browser

    s = with_reviewers(settings, required=1, undo_window_s=3, sync_interval_s=0.3)
    topic = Topics.from_settings(s).review
    texts = {
        0.55: "The update is fine, I guess.",
        0.35: "Not sure how I feel about the new layout.",
        0.45: "It works, but the export still fails sometimes.",
    }
    events = [dict(unlabelled(i, c, "page"), input={"text": t}) for i, (c, t) in enumerate(texts.items())]
    produce_raw(s, [routed(e, i) for i, e in enumerate(events)], topic=topic)
    port = free_port()
    server = Server(create_app(s), port)
    server.start()
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not server.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(100):  # the app's worker moves the topic's items into the queue
            if (
                httpx.get(f"{base}/v1/review/models", headers={"Authorization": f"Bearer {TOKENS['alice']}"})
                .json()["models"]
                .get("sentiment")
                == 3
            ):
                break
            time.sleep(0.2)
        browser = Browser(tmp_path / "chromium-profile")
        browser.goto(f"{base}/review")
        browser.wait_for("!document.getElementById('signin').hidden", what="the sign-in form")
        browser.js("document.getElementById('token').focus()")
        browser.type_text(TOKENS["alice"])
        browser.press("Enter")
        browser.wait_for("document.getElementById('reviewer') !== null", what="signed in")
        first = browser.wait_for("document.getElementById('i-id').textContent", what="the first item")
        assert first == "page-001"  # confidence 0.35: the most uncertain
        assert browser.js("document.getElementById('i-text').textContent") == texts[0.35]
        browser.press("1")  # negative
        second = browser.wait_for(
            "(t => t !== 'page-001' && t)(document.getElementById('i-id').textContent)", what="the next item"
        )
        assert second == "page-002"  # 0.45
        browser.press("2")  # neutral
        browser.wait_for("document.getElementById('i-id').textContent === 'page-000'", what="the third item")
        assert browser.js("document.getElementById('f-mine').textContent") == "2"
        shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
        assert browser.screenshot(shots / "review-page.png").stat().st_size > 10_000
        browser.press("s")  # skip the last one: nothing waits for alice any more
        browser.wait_for("!document.getElementById('empty').hidden", what="the empty queue")
        browser.press("u")  # undo the skip: it is back
        browser.wait_for(
            "document.getElementById('i-id').textContent === 'page-000' && "
            "!document.getElementById('item').hidden",
            what="the undone skip",
        )
        deadline = time.monotonic() + 30
        answers = {}
        while len(answers) < 2 and time.monotonic() < deadline:  # after the 3 s undo window
            answers = {
                e["event_id"]: e
                for e in (json.loads(m.value()) for m in read_topic(s, Topics.from_settings(s).raw))
            }
            time.sleep(0.5)
        assert sorted(answers) == ["page-001.review", "page-002.review"], answers
        assert answers["page-001.review"]["feedback"] == {"label": "negative"}
        assert answers["page-002.review"]["feedback"] == {"label": "neutral"}
        assert {(e["label_source"], e["source"]) for e in answers.values()} == {("review", "review:alice")}
    finally:
        if browser is not None:
            browser.close()
        server.server.should_exit = True
        server.join(10)
