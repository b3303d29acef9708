"""The monitor's rules on a real ledger and history, with a small fake registry."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from flywheel.settings import load_settings
from orchestration import history
from orchestration.monitor import check_model
from orchestration.registry import RegistryError
from pipelines.ingest import live_value
from pipelines.live import LiveLedger
from pipelines.predictions import PredictionRecord
from tests.unit.test_live import feedback

EVENT_IDS = itertools.count()


@dataclass
class Info:
    task: str = "text-classification"


class FakeModels:
    def info(self, model):
        return Info()


class FakeRegistry:
    """Aliases in a dict; a rollback writes the history entry the real registry writes."""

    def __init__(self, settings, champion: int, refuse: str | None = None):
        self.settings, self.champion, self.refuse = settings, champion, refuse
        self.models = FakeModels()
        self.rollbacks: list[dict] = []

    def alias_version(self, model, alias):
        return self.champion if alias == "champion" else None

    def rollback(self, model, to, reason, *, evidence=None, expect_champion=None):
        if self.refuse:
            raise RegistryError(self.refuse)
        assert expect_champion == self.champion
        self.rollbacks.append({"to": to, "reason": reason, "evidence": evidence})
        history.record(
            self.settings.state_dir, model, "auto-rollback", version=to, previous=self.champion, champion=to,
            reason=reason, evidence=evidence,
        )  # fmt: skip
        before, self.champion = self.champion, to
        return before, to


@pytest.fixture
def settings(tmp_path):
    return load_settings(state_dir=tmp_path / "state", monitor={"min_labelled": 50, "cooldown_s": 600})


def traffic(ledger, version: int, start: datetime, n: int, accuracy: float, tag: str):
    """``n`` labelled predictions of ``version`` from ``start``, one a second, ``accuracy`` of them right."""
    preds, records = [], []
    for i in range(n):
        right = int((i + 1) * accuracy) > int(i * accuracy)  # spread evenly over time
        label = "positive" if right else "negative"
        pid = f"{tag}-{i}"
        at = start + timedelta(seconds=i)
        preds.append(
            PredictionRecord(
                pid, "sentiment", version, "text-classification", at, {"label": label, "confidence": 0.9}
            )
        )
        records.append(feedback(next(EVENT_IDS), pid, label="positive"))
    ledger.ingest(preds, records, live_value)


def promote(
    settings, version: int, previous: int | None, action: str = "promote", at: datetime | None = None
):
    entry = history.record(
        settings.state_dir, "sentiment", action, version=version, previous=previous, champion=version
    )
    if at is not None:  # rewrite the time of the entry just written
        path = settings.state_dir / "registry" / "sentiment.history.jsonl"
        lines = path.read_text().splitlines()
        lines[-1] = lines[-1].replace(entry["time"], at.isoformat(timespec="seconds"))
        path.write_text("\n".join(lines) + "\n")


def test_a_worse_champion_is_rolled_back_once_with_evidence(settings):
    now = datetime.now(UTC)
    switch = now - timedelta(minutes=30)
    ledger = LiveLedger.of(settings)
    traffic(ledger, 3, switch - timedelta(minutes=20), 400, 0.75, "old")
    promote(settings, 3, 2, at=switch - timedelta(hours=2))
    promote(settings, 4, 3, "force-promote", at=switch)
    traffic(ledger, 4, switch + timedelta(seconds=1), 40, 0.4, "new")
    registry = FakeRegistry(settings, champion=4)
    waiting = check_model(settings, registry, ledger, "sentiment", now)
    assert waiting.state == "waiting" and "40" in waiting.message and "50" in waiting.message
    traffic(ledger, 4, switch + timedelta(minutes=1), 400, 0.6, "new2")
    result = check_model(settings, registry, ledger, "sentiment", now)
    assert result.state == "rolled-back" and registry.rollbacks[0]["to"] == 3
    evidence = registry.rollbacks[0]["evidence"]
    # the 4th planned look (50, 100, 200, 400, 800): B's first 400 against A's last 400
    assert evidence["n_old"] == 400 and evidence["n_new"] == 400 and evidence["worse"] is True
    assert evidence["looks"] == [50, 100, 200, 400, 800] and evidence["confidence"] == pytest.approx(0.99)
    assert evidence["promotion"] == "force-promote" and evidence["upper"] < -0.02
    # the rollback is not a promotion: nothing is watched until the next one, so no flapping
    again = check_model(settings, registry, ledger, "sentiment", now + timedelta(hours=2))
    assert again.state == "idle" and len(registry.rollbacks) == 1


def test_label_delay_old_predictions_labelled_late_still_count_for_the_old_version(settings):
    now = datetime.now(UTC)
    switch = now - timedelta(minutes=30)
    ledger = LiveLedger.of(settings)
    promote(settings, 4, 3, at=switch)
    traffic(ledger, 4, switch + timedelta(seconds=1), 300, 0.7, "new")
    traffic(ledger, 3, switch - timedelta(minutes=10), 300, 0.7, "old")  # labels arrive after the switch
    result = check_model(settings, FakeRegistry(settings, champion=4), ledger, "sentiment", now)
    assert result.state == "held" and result.comparison.n_old == 300 and result.comparison.n_new == 200
    assert "next look at 400" in result.message


def test_no_automatic_rollback_within_the_cooldown(settings):
    now = datetime.now(UTC)
    ledger = LiveLedger.of(settings)
    history.record(settings.state_dir, "sentiment", "rollback", version=3, previous=5, champion=3)
    switch = now - timedelta(minutes=2)
    traffic(ledger, 3, switch - timedelta(minutes=20), 300, 0.8, "old")
    promote(settings, 6, 3, at=switch)
    traffic(ledger, 6, switch + timedelta(seconds=1), 300, 0.5, "new")
    registry = FakeRegistry(settings, champion=6)
    result = check_model(settings, registry, ledger, "sentiment", now)
    assert result.state == "cooldown" and not registry.rollbacks and "cool-down" in result.message


def test_a_refused_rollback_is_reported_as_failed(settings):
    now = datetime.now(UTC)
    switch = now - timedelta(minutes=30)
    ledger = LiveLedger.of(settings)
    traffic(ledger, 3, switch - timedelta(minutes=20), 300, 0.8, "old")
    promote(settings, 4, 3, at=switch)
    traffic(ledger, 4, switch + timedelta(seconds=1), 300, 0.5, "new")
    refusing = FakeRegistry(settings, champion=4, refuse="v3 was itself rolled back automatically")
    result = check_model(settings, refusing, ledger, "sentiment", now)
    assert result.state == "failed" and result.alert and "itself rolled back" in result.message


def test_a_first_champion_or_a_moved_alias_is_not_judged(settings):
    ledger = LiveLedger.of(settings)
    promote(settings, 1, None)
    assert check_model(settings, FakeRegistry(settings, champion=1), ledger, "sentiment").state == "idle"
    promote(settings, 2, 1)
    moved = check_model(settings, FakeRegistry(settings, champion=1), ledger, "sentiment")
    assert moved.state == "idle" and "repair" in moved.message


def test_an_alert_is_posted_to_the_webhook_and_a_dead_webhook_is_only_reported(settings):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from orchestration.monitor import MonitorResult, alert

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        hooked = settings.model_copy(
            update={"monitor": settings.monitor.model_copy(update={"webhook_url": SecretStr(url)})}
        )
        result = MonitorResult("sentiment", "rolled-back", "champion v4 -> v3: live accuracy worse", None, 4)
        said: list[str] = []
        alert(hooked, result, said.append)
        assert received and received[0]["model"] == "sentiment" and received[0]["state"] == "rolled-back"
        assert said == ["ALERT sentiment: rolled-back: champion v4 -> v3: live accuracy worse"]
    finally:
        server.shutdown()
    dead = settings.model_copy(
        update={"monitor": settings.monitor.model_copy(update={"webhook_url": SecretStr(url)})}
    )
    alert(dead, result, said.append)  # the server is gone: reported, not raised
    assert "alert webhook" in said[-1] and "/hook" not in said[-1]  # the URL's path is its secret


def test_a_webhook_must_be_http():
    from flywheel.errors import ConfigError

    with pytest.raises(ConfigError, match="not an http"):
        load_settings(monitor={"webhook_url": "file:///etc/passwd"})
    with pytest.raises(ConfigError) as refused:
        load_settings(monitor={"webhook_url": "ftp://hooks.example.com/T0K3N-in-the-path"})
    assert "T0K3N" not in str(refused.value)


def test_looking_after_every_batch_of_labels_keeps_false_rollbacks_rare(settings):
    """Two equally good versions, the monitor run after every 25 new labels up to 1,600: with
    the planned looks (each at alpha / K) a rollback is rare; judging every run at alpha is not."""
    import random

    from flywheel.tasks.text import TextClassification
    from orchestration.monitor import Watch, judge
    from pipelines.live import LiveOutcome

    class Ledger:
        def __init__(self, new, old):
            self.new, self.old = new, old

        def outcomes(self, model, version, *, limit=None, latest=True, **_):
            found = self.new if version == 2 else self.old
            return found[:limit] if not latest else found[-limit:]

    rng = random.Random(3)
    s = settings.model_copy(update={"monitor": settings.monitor.model_copy(update={"min_labelled": 100})})
    now = datetime.now(UTC)
    watch = Watch("sentiment", 2, 1, now - timedelta(hours=1), "promote")
    alarms = naive = 0
    for _ in range(200):
        old = [LiveOutcome(1, 0.0, 0.0, float(rng.random() < 0.75)) for _ in range(1000)]
        new = [LiveOutcome(2, 0.0, 0.0, float(rng.random() < 0.75)) for _ in range(1600)]
        states = {
            judge(s, Ledger(new[:n], old), TextClassification, watch, now).state for n in range(25, 1601, 25)
        }
        alarms += "worse" in states
        from orchestration.live_stats import compare

        naive += any(
            compare("accuracy", [o.value for o in new[:n]], [o.value for o in old], 0.02).worse
            for n in range(100, 1601, 25)
        )
    assert alarms / 200 <= 0.05, alarms
    assert naive > alarms  # what the planned looks protect against
