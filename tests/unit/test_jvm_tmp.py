"""The stream job JVM's temp folders: a dead job's folder goes at the next claim, a live
job's stays (its lock is held by a real other process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines import jvm_tmp

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from pipelines import jvm_tmp
folder = jvm_tmp.claim(Path(sys.argv[1]))
(folder / "planner.jar").write_bytes(b"x" * 1000)
print(folder, flush=True)
time.sleep(float(sys.argv[2]))
"""


def holder(root: Path, sleep_s: float) -> tuple[subprocess.Popen, Path]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), str(sleep_s)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    return p, Path(p.stdout.readline().strip())


def test_a_live_jobs_folder_stays_and_a_killed_ones_is_swept(tmp_path):
    live, live_folder = holder(tmp_path, 60)
    dead, dead_folder = holder(tmp_path, 60)
    try:
        dead.kill()  # kill -9: no atexit, its folder stays behind
        dead.wait()
        assert (dead_folder / "planner.jar").exists()
        mine = jvm_tmp.claim(tmp_path)
        assert not dead_folder.exists() and not dead_folder.with_suffix(".lock").exists()
        assert (live_folder / "planner.jar").exists()
        assert mine.is_dir() and mine != live_folder
        assert jvm_tmp.sweep(tmp_path) == []  # both holders alive: nothing to remove
    finally:
        live.kill()
        live.wait()
    assert jvm_tmp.sweep(tmp_path) == [live_folder]


def test_a_job_that_exits_removes_its_folder_and_lock(tmp_path):
    p, folder = holder(tmp_path, 0)
    assert p.wait(timeout=30) == 0
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    assert not folder.exists()


def test_a_folder_without_its_lock_is_swept(tmp_path):
    orphan = tmp_path / "123-deadbeef"
    orphan.mkdir()
    (orphan / "f").write_text("x")
    assert jvm_tmp.sweep(tmp_path) == [orphan] and not orphan.exists()
    assert jvm_tmp.sweep(tmp_path / "absent") == []


def test_jvm_args_keep_other_options_and_replace_an_older_tmpdir(monkeypatch, tmp_path):
    monkeypatch.setenv("JVM_ARGS", "-Xmx2g -Djava.io.tmpdir=/tmp")
    assert jvm_tmp.java_tmpdir_args(tmp_path) == f"-Xmx2g -Djava.io.tmpdir={tmp_path}"
    monkeypatch.delenv("JVM_ARGS")
    assert jvm_tmp.java_tmpdir_args(tmp_path) == f"-Djava.io.tmpdir={tmp_path}"
