"""The stream job JVM's temp folders: a dead job's folder goes at the next claim, a live
job's stays (its lock is held by a real other process)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines import jvm_tmp

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
import time
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


JVM_STANDIN = """
import subprocess, sys, time
import time
from pathlib import Path
from pipelines import jvm_tmp
folder = jvm_tmp.claim(Path(sys.argv[1]))
# stands in for the gateway JVM: its own session (it outlives this process), the folder on its command line
argv = [sys.executable, "-c", "import time; time.sleep(120)", "-Djava.io.tmpdir=" + str(folder)]
jvm = subprocess.Popen(argv, start_new_session=True)
print(folder, jvm.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False


def test_a_dead_jobs_jvm_still_running_is_killed_before_its_folder_goes(tmp_path):
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", JVM_STANDIN, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    (dead_folder, dead_jvm), (live_folder, live_jvm) = [
        (Path(a), int(b)) for a, b in (j.stdout.readline().split() for j in jobs)
    ]
    try:
        jobs[0].kill()  # the job is SIGKILLed; its JVM runs on (parent 1)
        jobs[0].wait()
        assert _alive(dead_jvm)
        jvm_tmp.claim(tmp_path)
        deadline = time.monotonic() + 10
        while _alive(dead_jvm) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(dead_jvm) and not dead_folder.exists()
        assert _alive(live_jvm) and live_folder.exists()  # a live job's JVM is left alone
    finally:
        for pid in (dead_jvm, live_jvm):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        jobs[1].kill()
        jobs[1].wait()
