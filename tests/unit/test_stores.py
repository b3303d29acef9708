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


def run_at_once(code: str, state, n: int, timeout_s: float) -> list[tuple[str, str]]:
    """``n`` Python processes running ``code`` with ``state`` as argv[1], started together;
    their (stdout, stderr), after asserting each exited 0."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=timeout_s) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return outs


OPEN_ALL = """
import sys
from flywheel.settings import load_settings
from flywheel.privacy import Forgotten
from pipelines.fates import FateLedger
from pipelines.live import LiveLedger
from pipelines.review_queue import ReviewQueue
s = load_settings(state_dir=sys.argv[1])
ReviewQueue(s).close()
FateLedger.of(s).db.close()
LiveLedger.of(s).close()
forgotten = Forgotten.of(s)
forgotten.add("race", ())
forgotten.close()
print("ok")
"""


def test_six_processes_open_every_sqlite_store_of_a_fresh_state_dir_at_once(tmp_path):
    import sqlite3

    state = tmp_path / "state"
    run_at_once(OPEN_ALL, state, 6, timeout_s=120)
    stamped = {}
    for path in sorted(state.rglob("*.sqlite")):
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stamped[path.name] = db.execute("PRAGMA user_version").fetchone()[0]
    assert set(stamped) == {"queue.sqlite", "fates.sqlite", "live.sqlite", "forgotten.sqlite"}, stamped
    assert all(v >= 1 for v in stamped.values()), stamped


def test_a_sqlite_store_of_a_newer_layout_is_refused_with_the_fix_and_an_unstamped_one_is_kept(tmp_path):
    import sqlite3

    from flywheel.errors import ConfigError
    from flywheel.stores import sqlite_schema

    schema = "CREATE TABLE IF NOT EXISTS t (a TEXT); CREATE TABLE IF NOT EXISTS u (b TEXT)"
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as db:  # a store from before the stamp: one table, one row
        db.execute("CREATE TABLE t (a TEXT)")
        db.execute("INSERT INTO t VALUES ('kept')")
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_schema(db, schema, 2, path)
    assert db.execute("SELECT a FROM t").fetchall() == [("kept",)]
    assert db.execute("SELECT count(*) FROM u").fetchone() == (0,)  # the table it lacked
    assert db.execute("PRAGMA user_version").fetchone() == (2,)
    sqlite_schema(db, schema, 3, path)  # an additive upgrade
    assert db.execute("PRAGMA user_version").fetchone() == (3,)
    with pytest.raises(ConfigError, match="newer Flywheel") as newer:
        sqlite_schema(db, schema, 2, path)
    assert str(path) in str(newer.value) and "move the file aside" in str(newer.value)
    with pytest.raises(ConfigError, match="older Flywheel"):
        sqlite_schema(db, schema, 5, path, oldest=4)
    assert not db.in_transaction and db.execute("PRAGMA user_version").fetchone() == (3,)


ENSURE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from flywheel.settings import load_settings
from orchestration import mlflow_store
mlflow_store.ensure(load_settings(state_dir=sys.argv[1]))
print("ok")
"""


def test_an_mlflow_store_of_an_older_schema_is_migrated_once_by_four_processes_at_once(tmp_path):
    """An old ``mlflow.db`` (an MLflow upgrade): four processes at once, one migration, a clear line."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import (
        _get_alembic_config,
        _get_latest_schema_revision,
        _get_schema_version,
        create_sqlalchemy_engine_with_retry,
    )
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    state = tmp_path / "state"
    state.mkdir()
    uri = f"sqlite:///{state / 'mlflow.db'}"
    engine = create_sqlalchemy_engine_with_retry(uri)
    config = _get_alembic_config(uri)
    head = _get_latest_schema_revision()
    old = ScriptDirectory.from_config(config).get_revision(head)
    for _ in range(10):  # ten revisions back: a store an older MLflow left
        old = ScriptDirectory.from_config(config).get_revision(old.down_revision)
    InitialBase.metadata.create_all(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, old.revision)
    assert _get_schema_version(engine) == old.revision
    engine.dispose()

    outs = run_at_once(ENSURE, state, 4, timeout_s=300)
    said = [line for _, err in outs for line in err.splitlines() if "migrating it" in line]
    assert len(said) == 1 and head in said[0] and old.revision in said[0], said  # once, from what to what
    engine = create_sqlalchemy_engine_with_retry(uri)
    assert _get_schema_version(engine) == head
