"""Issue 32: a store is prepared once, by whichever process comes first."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import sys, time
from flywheel.stores import prepare
def create():
    with open(sys.argv[2], "a") as f:
        f.write("x")
    time.sleep(0.3)  # a migration takes a while: the others must wait, not run it too
print(prepare(sys.argv[1], "demo", "v1", create))
"""


def test_eight_processes_at_once_prepare_a_store_once(tmp_path):
    count = tmp_path / "created"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CODE, str(tmp_path / "state"), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    said = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert count.read_text() == "x" and said.count("True") == 1 and said.count("False") == 7


def test_a_new_version_prepares_again(tmp_path):
    from flywheel.stores import prepare

    runs = []
    assert prepare(tmp_path, "demo", "v1", lambda: runs.append(1))
    assert not prepare(tmp_path, "demo", "v1", lambda: runs.append(1))
    assert prepare(tmp_path, "demo", "v2", lambda: runs.append(2))
    assert runs == [1, 2]


def test_an_mlflow_store_newer_than_this_mlflow_stops_with_the_fix(tmp_path):
    import sqlite3

    from flywheel.errors import ConfigError
    from flywheel.settings import load_settings
    from orchestration import mlflow_store

    s = load_settings(state_dir=tmp_path / "state")
    mlflow_store.ensure(s)  # a valid store of this version
    (tmp_path / "state" / "locks" / "mlflow.ready").unlink()  # as a process of another version finds it
    with sqlite3.connect(tmp_path / "state" / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")  # a revision from the future
    with pytest.raises(ConfigError, match="newer MLflow") as refused:
        mlflow_store.ensure(s)
    assert "requirements.lock" in str(refused.value)
