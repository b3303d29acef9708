"""Serving, the prediction log, live metrics and the automatic rollback, through the real loop:
/v1/predict (real champion from MLflow, real prediction log on the broker) → feedback naming
only the prediction_id → the real stream job → the ingestor's join → the monitor."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feature_repo.store import open_store
from orchestration import history
from orchestration.flow import bootstrap_model, retrain
from orchestration.monitor import monitor_once
from orchestration.registry import AUTO_ROLLED_BACK, CHAMPION, Registry, RegistryError
from orchestration.serving import ChampionPredictor
from orchestration.status import model_status
from pipelines.http_api import create_app
from pipelines.ingest import Ingestor
from pipelines.live import LiveLedger
from tests.helpers import make_event
from tests.integration.feast_utils import feed_labelled
from tests.integration.kafka_utils import produce_raw
from tests.integration.test_registry import corpus, tuned  # noqa: F401 - the corpus fixture
from tests.integration.test_stream_job import run_bounded

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]
ROTATE = {"negative": "positive", "positive": "neutral", "neutral": "negative"}


def predict(api, texts: list[str]) -> tuple[str, list[dict]]:
    versions, out = set(), []
    for i in range(0, len(texts), 50):
        r = api.post(
            "/v1/predict",
            json={"model_name": "sentiment", "inputs": [{"text": t} for t in texts[i : i + 50]]},
        )
        assert r.status_code == 200, r.text
        versions.add(r.json()["model_version"])
        out += r.json()["predictions"]
    assert len(versions) == 1, versions
    return versions.pop(), out


def feedback_values(rows, answers, prefix: str) -> list[bytes]:
    """Each user's verified label, naming only the prediction_id (no version, no prediction)."""
    values = []
    for i, (row, answer) in enumerate(zip(rows.itertuples(), answers, strict=True)):
        event = make_event(
            i, event_id=f"{prefix}-{i}", input={"text": row.text}, feedback={"label": row.label}
        )
        for field in ("prediction", "model_version"):
            del event[field]
        event["prediction_id"] = answer["prediction_id"]
        values.append(json.dumps(event).encode())
    return values


def flywheel(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {p: max(a.get(p, 0), b.get(p, 0)) for p in {*a, *b}}


def wait_version(api, texts, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while predict(api, texts)[0] != version:
        assert time.monotonic() < deadline, f"/v1/predict did not follow the alias to v{version}"
        time.sleep(0.5)


def test_a_worse_version_forced_in_is_rolled_back_automatically_once(settings, corpus):  # noqa: F811
    s = tuned(settings, tolerance=0.0, distill_alpha=0.0)
    s = s.model_copy(
        update={
            "serving": s.serving.model_copy(update={"refresh_s": 0.5, "shadow_share": 1.0}),
            "monitor": s.monitor.model_copy(update={"min_labelled": 100, "window_labelled": 200}),
        }
    )
    seed = corpus[corpus.domain == "general"].sample(240, random_state=3)
    assert bootstrap_model(s, "sentiment", "text-classification", seed, progress=False).status == "promoted"
    store = open_store(s)
    bad = corpus.sample(200, random_state=5)
    feed_labelled(s, store, bad.assign(label=bad.label.map(ROTATE)), prefix="bad")
    # a bad update that really learnt its rotated labels (no distillation, a fast head)
    fast = s.training.model_copy(update={"min_steps": 120, "head_learning_rate": 1e-2})
    second = retrain(s.model_copy(update={"training": fast}), "sentiment", feast_store=store, progress=False)
    assert second.version == 2 and second.status == "rejected", second.reasons

    # Users send the texts v2 learnt wrong, with their true labels: the same 200 before and after.
    before = after = bad
    registry = Registry(s)
    with TestClient(create_app(s, predictor=ChampionPredictor(s))) as api:
        version, answers = predict(api, list(before.text))
        assert version == "1" and all(a["prediction_id"].startswith("p-") for a in answers)
        stops = produce_raw(s, feedback_values(before, answers, "live-a"))

        config = s.write_resolved(s.state_dir / "flywheel.yaml")
        forced = flywheel(
            config, "promote", "sentiment", "2", "--force", "--reason", "an engineer overrides the gate"
        )
        assert forced.returncode == 0 and "champion v1 -> v2" in forced.stdout, forced.stdout + forced.stderr
        wait_version(api, list(before.text[:2]), "2")
        version, answers = predict(api, list(after.text))
        stops = merge(stops, produce_raw(s, feedback_values(after, answers, "live-b")))

        run_bounded(s, stops)
        Ingestor(s, store).run(until_caught_up=True)
        # before the switch the candidate (v2) answered every request in the shadow: judged on the
        # same feedback, never returned, never counted as served
        ledger = LiveLedger.of(s, readonly=True)
        assert len(ledger.outcomes("sentiment", 2, shadow=True)) == 200
        ledger.close()
        live = {v["version"]: v for v in model_status(s, "sentiment")["live"]["versions"]}
        # served predictions only (the 200 "bad" events that named v1 themselves are not judged)
        assert live[1]["n"] == 200 and live[2]["n"] == 200, live

        cron = flywheel(config, "monitor", "--once")
        assert cron.returncode == 0 and "monitor sentiment: rolled-back" in cron.stdout, (
            cron.stdout + cron.stderr
        )
        assert registry.alias_version("sentiment", CHAMPION) == 1
        wait_version(api, list(before.text[:2]), "1")  # the previous champion serves again

    entries = history.entries(s.state_dir, "sentiment")
    assert [e.action for e in entries][-2:] == ["force-promote", "auto-rollback"]
    assert "an engineer overrides the gate" in entries[-2].reason and entries[-2].actor
    evidence = entries[-1].evidence
    # planned looks at 100 and 200: v2's first 200 against v1's last 200, each look at 5 % / 2
    assert evidence["worse"] and evidence["n_new"] == 200 and evidence["n_old"] == 200
    assert evidence["looks"] == [100, 200] and evidence["confidence"] == pytest.approx(0.975)
    assert evidence["upper"] < -s.monitor.tolerance.get("text-classification", 0.02)
    assert {"interval_new", "interval_old", "p_value", "test"} <= set(evidence)
    assert json.loads(registry.version_tags("sentiment", 2)[AUTO_ROLLED_BACK])["worse"] is True
    runs = registry.client.list_artifacts(registry.client.get_model_version("sentiment", "2").run_id, "live")
    assert any(a.path.endswith(".png") for a in runs), "the live plot is logged to the rolled-back version"

    # no flapping: the next look finds nothing to do, and the monitor never brings v2 back
    assert [r.state for r in monitor_once(s, log=lambda m: None)] == ["idle"]
    assert sum(e.action == "auto-rollback" for e in history.entries(s.state_dir, "sentiment")) == 1
    with pytest.raises(RegistryError, match="itself rolled back automatically"):
        registry.rollback("sentiment", 2, "monitor", evidence={}, expect_champion=1)
