"""Acknowledged means durable on the embedded broker (issue 26): a real tansu killed with
SIGKILL and started again (a new epoch, its topics empty): the same client keeps working
without a restart, and the settler re-delivers from the edge journal every acknowledged
event that had no recorded fate, while what had a fate is trimmed and not sent again."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from flywheel.broker import EmbeddedBroker, free_port, port_open, read_epoch
from flywheel.kafka import Topics, ensure_topics
from flywheel.settings import load_settings
from pipelines.fates import CLEAN, Fate, FateLedger
from pipelines.predictions import PredictionLog, PredictionRecord, new_prediction_id, now_utc
from pipelines.sdk import FeedbackClient
from pipelines.settler import read_state, settle
from pipelines.stats import read_topic
from tests.helpers import make_event


def kill9(broker: EmbeddedBroker) -> None:
    pid = broker.status().pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    # gone, and its listening socket too (an exiting process drops it a moment after /proc says so)
    while (broker.status().running or port_open(broker.host, broker.port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not broker.status().running


def own_broker(tmp_path, delivery_timeout_s: float):
    """Settings whose state dir is the broker's own (so its epochs are seen), and the broker."""
    state = tmp_path / "state"
    port = free_port()
    s = load_settings(
        state_dir=state,
        broker={"port": port},
        kafka={"topic_prefix": f"d{uuid.uuid4().hex[:8]}", "delivery_timeout_s": delivery_timeout_s},
    )
    broker = EmbeddedBroker(state, port=port)
    broker.start()
    return s, state, broker


def test_a_broker_killed_and_restarted_loses_nothing_acknowledged(tmp_path):
    s, state, broker = own_broker(tmp_path, delivery_timeout_s=8)
    try:
        ensure_topics(s)
        first_epoch = read_epoch(state)
        raw = Topics.from_settings(s).raw
        client = FeedbackClient(s)
        log = PredictionLog(s)
        before = [make_event(i, event_id=f"a-{i}") for i in range(30)]
        assert client.submit_many(before).ok
        log.log(
            [PredictionRecord(new_prediction_id(), "m", 1, "text-classification", now_utc(), {"label": "x"})]
        )
        raw_bytes = client.send_raw([b'{"not": "an event"}'])
        assert raw_bytes.ok and raw_bytes.accepted == ["<line 0>"]

        # ten of them reached a fate before the crash: those are trimmed, never re-sent
        ledger = FateLedger.of(s)
        ledger.record([Fate(f"a-{i}", CLEAN) for i in range(10)])
        report = settle(s, log=lambda _m: None)
        assert report.trimmed == 10 and report.unsettled == 22 and report.redelivered == 0

        kill9(broker)
        broker.start()
        ensure_topics(s)
        assert read_epoch(state).number == first_epoch.number + 1
        assert read_topic(s, raw) == []  # the broker forgot everything: this is what we guard

        # the same client, no restart: it rebuilds its producer for the new epoch
        after = [make_event(i, event_id=f"b-{i}") for i in range(5)]
        started = time.monotonic()
        assert client.submit_many(after).ok
        assert client.health.rebuilds == 1 and not client.health.degraded
        recovered_s = time.monotonic() - started

        report = settle(s, log=lambda _m: None)
        assert report.redelivered == 22, report.describe()  # 20 events, 1 prediction, 1 raw line
        values = [m.value() for m in read_topic(s, raw)]
        for i in range(10):  # settled before the crash: not re-sent
            assert not any(f'"a-{i}"' in v.decode() for v in values)
        for i in range(10, 30):
            assert any(f'"a-{i}"' in v.decode() for v in values)
        assert b'{"not": "an event"}' in values
        predictions = read_topic(s, Topics.from_settings(s).predictions)
        assert len(predictions) == 1

        # a second pass in the same epoch does not send them again
        assert settle(s, log=lambda _m: None).redelivered == 0
        assert read_state(s).totals["redelivered"] == 22
        print(f"client recovered in {recovered_s:.2f}s after the broker came back")
        client.close()
        log.close()
        ledger.close()
    finally:
        broker.stop()


def test_health_is_degraded_while_the_broker_is_down_and_heals(tmp_path):
    s, _, broker = own_broker(tmp_path, delivery_timeout_s=3)
    try:
        ensure_topics(s)
        client = FeedbackClient(s)
        assert client.submit_many([make_event(0)]).ok
        kill9(broker)
        result = client.submit_many([make_event(1, event_id="down-1")])
        assert result.failed and client.health.degraded
        broker.start()
        ensure_topics(s)
        assert client.submit_many([make_event(2, event_id="up-2")]).ok
        assert not client.health.degraded
        # the failed one was voided: the settler does not wait for it, nor re-send it
        report = settle(s, log=lambda _m: None)
        sent = [m.value() for m in read_topic(s, Topics.from_settings(s).raw)]
        assert not any(b"down-1" in v for v in sent)
        assert report.unsettled == 2  # event 0 (lost with the broker, re-delivered) and up-2
        assert report.redelivered == 1
        client.close()
    finally:
        broker.stop()


def test_the_broker_inherits_no_settings_or_secrets(tmp_path, monkeypatch):
    """Issue 27, item 10: the broker child of `flywheel run` got every secret of its parent."""
    monkeypatch.setenv("FLYWHEEL_HTTP__AUTH_TOKEN", "Zq8-broker-SECRET")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "Zq8-aws-SECRET")
    broker = EmbeddedBroker(tmp_path / "state", port=free_port())
    status = broker.start()
    try:
        environ = Path(f"/proc/{status.pid}/environ").read_bytes()
        assert b"SECRET" not in environ and b"FLYWHEEL_" not in environ
        assert b"PATH=" in environ
    finally:
        broker.stop()


def test_a_broker_over_its_memory_limit_is_rotated_only_while_a_settler_runs_and_loses_nothing(tmp_path):
    """Rotation (tansu keeps every record in memory): the supervisor restarts the embedded
    broker empty once it holds more than ``journal.rotate_broker_mb``, but only while a
    settler reports (it is what re-delivers the unsettled); what was acknowledged comes back."""
    from orchestration.supervisor import Supervisor

    s = load_settings(
        state_dir=tmp_path / "state",
        broker={"port": free_port()},
        kafka={"topic_prefix": f"r{uuid.uuid4().hex[:8]}"},
        journal={"rotate_broker_mb": 16},  # below a fresh broker's memory: due at once
    )
    sup = Supervisor(s, parts=(), log=print)
    sup.start()
    try:
        first = read_epoch(s.state_dir)
        client = FeedbackClient(s)
        assert client.submit_many([make_event(i, event_id=f"r-{i}") for i in range(20)]).ok
        sup.watch_broker()  # no settler has reported: rotating would strand the unsettled
        assert sup.broker_rotations == 0 and read_epoch(s.state_dir).number == first.number

        assert settle(s, log=lambda _m: None).unsettled == 20  # a settler reports
        sup.watch_broker()
        assert sup.broker_rotations == 1 and sup.broker_restarts == 0
        assert read_epoch(s.state_dir).number == first.number + 1
        raw = Topics.from_settings(s).raw
        assert read_topic(s, raw) == []  # the new broker starts empty

        assert settle(s, log=lambda _m: None).redelivered == 20
        ids = {v for m in read_topic(s, raw) for v in [m.value().decode()]}
        assert all(any(f'"r-{i}"' in v for v in ids) for i in range(20))
        assert client.submit_many([make_event(99, event_id="r-after")]).ok  # the client follows
        client.close()
    finally:
        sup.stop()
