"""The submission path against a real tansu broker: SDK, HTTP, CLI, broker down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from flywheel.broker import EmbeddedBroker, free_port
from flywheel.errors import BrokerError, DeliveryError
from flywheel.events import validate_event
from flywheel.settings import load_settings
from pipelines.sdk import FeedbackClient
from tests.helpers import make_event
from tests.integration.kafka_utils import read_topic

pytestmark = pytest.mark.integration
N = 10_000
ROOT = Path(__file__).parents[2]


def events(n: int, prefix: str = "evt"):
    return [make_event(i, event_id=f"{prefix}-{i:06d}", input={"text": f"text {i} é ✓"}) for i in range(n)]


def assert_read_back(settings, sent: list[dict]):
    msgs = read_topic(settings, f"{settings.kafka.topic_prefix}.raw")
    assert len(msgs) == len(sent)
    got = {m.key().decode(): json.loads(m.value()) for m in msgs}
    assert len(got) == len(sent), "duplicates on the topic"
    for event in sent:
        assert got[event["event_id"]] == json.loads(validate_event(event).to_json_bytes())


def test_sdk_10k_round_trip(settings):
    sent = events(N)
    with FeedbackClient(settings) as client:
        result = client.submit_many(sent)
        assert result.ok and len(result.accepted) == N
        assert client.submit(make_event(0, event_id="single-1")) == "single-1"
    assert_read_back(settings, [*sent, make_event(0, event_id="single-1")])


def test_sdk_rejects_invalid_without_sending(settings):
    bad = make_event(1, prediction={"label": "x", "confidence": 2})
    with FeedbackClient(settings) as client:
        result = client.submit_many([make_event(0), bad, "not an object"])
    assert result.accepted == ["evt-000000"]
    assert [(r.index, r.event_id) for r in result.rejected] == [(1, "evt-000001"), (2, None)]
    assert result.rejected[0].problems[0][0] == "prediction.confidence"
    assert_read_back(settings, [make_event(0)])


class Server(threading.Thread):
    def __init__(self, app, port):
        import uvicorn

        super().__init__(daemon=True)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))

    def run(self):
        self.server.run()


def test_http_10k_round_trip(settings):
    from pipelines.http_api import create_app

    port = free_port()
    server = Server(create_app(settings), port)
    server.start()
    try:
        deadline = time.monotonic() + 15
        while not server.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        sent = events(N, prefix="http")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            assert http.get("/healthz").json()["status"] == "ok"
            accepted = []
            for start in range(0, N, 500):
                r = http.post("/v1/feedback", json=sent[start : start + 500])
                assert r.status_code == 202, r.text
                accepted += r.json()["accepted"]
            r = http.post("/v1/feedback", json=make_event(1, prediction={"label": "a", "confidence": 3}))
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "prediction.confidence"
        assert accepted == [e["event_id"] for e in sent]
    finally:
        server.server.should_exit = True
        server.join(10)
    assert_read_back(settings, sent)


def test_broker_down_is_a_clear_error_and_nothing_is_silently_lost(tmp_path):
    down = load_settings(state_dir=tmp_path, broker={"port": free_port()}, kafka={"delivery_timeout_s": 2})
    with pytest.raises(BrokerError, match="flywheel broker start"):
        FeedbackClient(down)
    # Skipping the connection check, every event comes back as failed, none as accepted.
    client = FeedbackClient(down, check_connection=False)
    result = client.submit_many([make_event(i) for i in range(5)])
    assert result.accepted == [] and [f.event_id for f in result.failed] == [f"evt-{i:06d}" for i in range(5)]
    assert all("timed out" in f.error.lower() for f in result.failed)
    with pytest.raises(DeliveryError, match="resubmit"):
        result.raise_for_errors()
    client.close()


def run_cli(settings, *args, stdin=None):
    env = {
        "FLYWHEEL_STATE_DIR": str(settings.state_dir),
        "FLYWHEEL_BROKER__PORT": str(settings.broker.port),
        "FLYWHEEL_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_submit_reports_bad_lines_by_number(settings):
    r = run_cli(settings, "submit", "examples/feedback-with-errors.jsonl")
    assert r.returncode == 1, r.stderr
    assert "sent 16, rejected 4, failed 0" in r.stdout
    for line, fragment in [
        (4, "prediction.confidence"),
        (8, "not_json"),
        (12, "in the future"),
        (16, "colour: is not a field"),
    ]:
        assert any(ln.strip().startswith(f"line {line}:") and fragment in ln for ln in r.stdout.splitlines())
    good = run_cli(settings, "submit", "-", stdin=(ROOT / "examples/feedback.jsonl").read_text())
    assert good.returncode == 0 and "sent 200, rejected 0" in good.stdout


def test_broker_lifecycle_only_touches_its_own_process(tmp_path):
    b = EmbeddedBroker(tmp_path / "b", port=free_port())
    assert not b.status().running
    status = b.start()
    assert status.running and b.start().pid == status.pid  # idempotent
    assert b.stop() and not b.status().running
    # A pid file naming someone else's process: stop must not signal it.
    other = subprocess.Popen(["sleep", "30"])
    try:
        b.pid_file.write_text(
            json.dumps({"pid": other.pid, "binary": "/nonexistent/tansu", "address": b.address})
        )
        assert b.stop() is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_broker_commands_refuse_when_a_cluster_is_configured(tmp_path):
    env = {
        "FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS": "kafka.example:9092",
        "FLYWHEEL_STATE_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "broker", "start"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 1 and "does not start or stop a broker" in r.stderr


def test_cli_submit_raw_sends_every_line_unvalidated_keyed_by_event_id(settings):
    from pipelines.stats import read_topic

    r = run_cli(settings, "submit", "--raw", "examples/feedback-mixed.jsonl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sent 200, rejected 0, failed 0" in r.stdout
    messages = read_topic(settings, f"{settings.kafka.topic_prefix}.raw")
    assert len(messages) == 200
    assert all(m.key() for m in messages)  # every record has a name its fate is recorded under
    keyed = [m for m in messages if not m.key().startswith(b"~raw-")]
    assert all(json.loads(m.value())["event_id"] == m.key().decode() for m in keyed)
    assert len(keyed) >= 180  # all but the lines that carry no event_id: those get a generated one
