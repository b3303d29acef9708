"""flywheel.locks against a real second process: each shape refuses or waits while it holds
the lock, and a kill -9 of the holder frees it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from flywheel.locks import LockBusy, file_lock, held_elsewhere, tried, try_lock

HOLD = """
import sys, time
from pathlib import Path
from flywheel.locks import try_lock
f = try_lock(Path(sys.argv[1]))
print("held" if f else "busy", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    path = tmp_path / "x.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield path, proc
    proc.kill()
    proc.wait()


def test_every_shape_sees_a_lock_another_process_holds(holder):
    path, _ = holder
    assert held_elsewhere(path)
    assert try_lock(path) is None
    with tried(path) as mine:
        assert mine is False
    started = time.monotonic()
    with pytest.raises(LockBusy, match="held by another process"), file_lock(path, timeout_s=0.5):
        pass
    assert time.monotonic() - started >= 0.5


def test_a_lock_dies_with_its_holder_even_under_kill_9(holder):
    path, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not held_elsewhere(path)
    f = try_lock(path)
    assert f is not None
    f.close()
    with tried(path) as mine, file_lock(path.with_name("other.lock"), timeout_s=0.5):
        assert mine is True


def test_a_missing_lock_file_is_not_held(tmp_path):
    assert not held_elsewhere(tmp_path / "absent" / "x.lock")
