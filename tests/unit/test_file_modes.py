"""Issue 27, item 9: the state dir is its user's alone, whatever modes it had before."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from flywheel.layout import secure_state_dir
from flywheel.settings import load_settings


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_open_state_dir_and_its_stores_are_closed(tmp_path):
    root = tmp_path / "state"
    (root / "review").mkdir(parents=True)
    (root / "run").mkdir()
    root.chmod(0o755)
    files = [root / "mlflow.db", root / "review" / "queue.sqlite", root / "review" / "queue.sqlite-wal"]
    files.append(root / "run" / "flywheel.resolved.yaml")
    for f in files:
        f.write_text("x")
        f.chmod(0o644)
    secure_state_dir(root)
    assert mode(root) == 0o700
    assert all(mode(f) == 0o600 for f in files)


def test_the_resolved_config_is_0600_even_if_it_existed(tmp_path):
    path = tmp_path / "resolved.yaml"
    path.write_text("old")
    path.chmod(0o644)
    load_settings().write_resolved(path)
    assert mode(path) == 0o600


def test_the_cli_creates_what_it_writes_for_its_user_only(tmp_path):
    state = tmp_path / "state"
    config = load_settings(state_dir=state).write_resolved(tmp_path / "flywheel.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "--config", str(config), "status"],
        capture_output=True,
        text=True,
    )
    assert mode(state) == 0o700, out.stderr
    made = [p for p in state.rglob("*")]
    assert all(mode(p) & 0o077 == 0 for p in made), [(p, oct(mode(p))) for p in made]
