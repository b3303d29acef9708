"""Issue 32: processes of different kinds starting at the same instant on a fresh state dir
(`serve` as an API replica on a shared volume, `retrain` from cron, `status`, `ingest`) create or migrate
each store once; none fails, and the stores are valid afterwards. Ten rounds."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flywheel.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
CRASHES = ("OperationalError", "Traceback", "duplicate column", "already exists")


def start(config: Path, *args: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "--config", str(config), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_processes_starting_together_on_a_fresh_state_dir_never_race_on_a_store(settings, tmp_path):
    for round_ in range(10):
        work = tmp_path / f"round-{round_}"
        ports = [free_port()]
        s = settings.model_copy(update={"state_dir": work / "state"})
        configs = []
        for port in ports:
            one = s.model_copy(update={"http": s.http.model_copy(update={"port": port})})
            configs.append(one.write_resolved(work / f"serve-{port}.yaml"))
        config = s.write_resolved(work / "flywheel.yaml")
        procs = {
            "serve-a": start(configs[0], "serve", log=work / "serve-a.log"),
            "retrain": start(
                config, "retrain", "--if-ready", "--model", "sentiment", log=work / "retrain.log"
            ),
            "status": start(config, "status", log=work / "status.log"),
            "ingest": start(config, "ingest", log=work / "ingest.log"),
        }
        try:
            for name, port in (("serve-a", ports[0]),):
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    assert procs[name].poll() is None, (work / f"{name}.log").read_text()[-3000:]
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.3)
                else:
                    raise AssertionError(f"round {round_}: {name} never answered")
            assert procs["status"].wait(120) == 0, (work / "status.log").read_text()[-3000:]
            procs["retrain"].wait(120)
            time.sleep(2)  # the ingestor has opened the Feast store and its consumer
            assert procs["ingest"].poll() is None, (work / "ingest.log").read_text()[-3000:]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs.values():
                proc.wait(60)
        for name in procs:
            text = (work / f"{name}.log").read_text()
            assert not [c for c in CRASHES if c in text], f"round {round_}, {name}:\n{text[-3000:]}"
        # the stores are valid: MLflow answers, SQLite stores pass their integrity check
        from mlflow import MlflowClient

        assert MlflowClient(s.mlflow_tracking_uri).search_registered_models() == []
        for db in (work / "state").rglob("*.sqlite"):
            with sqlite3.connect(db) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", db
