"""The decision history: appends survive a line torn by a crash."""

from __future__ import annotations

from flywheel.layout import StateLayout
from orchestration import history


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_entry_is_kept(tmp_path):
    history.record(tmp_path, "m", "promote", version=1, decision="v1-promote")
    path = StateLayout(tmp_path).history("m")
    path.write_bytes(path.read_bytes() + b'{"time": "2026-')  # killed mid-append
    history.record(tmp_path, "m", "promote", version=2, decision="v2-promote")
    assert [e["version"] for e in history.read(tmp_path, "m")] == [1, 2]
    assert history.has_decision(tmp_path, "m", "v2-promote")
    assert not history.has_decision(tmp_path, "m", "v3-promote")
