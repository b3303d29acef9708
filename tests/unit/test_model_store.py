"""A model's local state: one writer, intent-named operations, safe under concurrent processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from flywheel.errors import FlywheelError
from flywheel.layout import StateLayout
from training.model_store import Decision, ModelInfo, ModelStore, Window


def make_store(tmp_path) -> ModelStore:
    store = ModelStore(tmp_path)
    frame = pd.DataFrame({"sample_id": ["a"], "text": ["t"], "label": ["x"]})
    store.create(
        ModelInfo("m", "text-classification", ["x", "y"], ""), frame, frame, datetime(2026, 1, 1, tzinfo=UTC)
    )
    return store


def _hammer(state_dir, worker: int, n: int) -> None:
    store = ModelStore(state_dir)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(n):
        end = (start + timedelta(seconds=worker * 10_000 + i + 1)).isoformat()
        store.record_data_rejected("m", Window(None, end, (f"w{worker}-{i}",)))


def test_two_processes_changing_the_state_lose_nothing_and_never_tear_it(tmp_path):
    make_store(tmp_path)
    ctx = multiprocessing.get_context("spawn")  # fork after torch/arrow threads can segfault
    procs = [ctx.Process(target=_hammer, args=(tmp_path, w, 300)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = ModelStore(tmp_path).state("m")
    assert len(state.data_rejected) == 600  # every read-modify-write kept
    assert state.watermark == (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=20_300)).isoformat()


def test_a_decision_is_journalled_then_completed_once(tmp_path):
    store = make_store(tmp_path)
    window = Window("2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00")
    d = Decision("v2-reject", "reject", 2, 1, ("worse",), window)
    store.begin_decision("m", d)
    store.begin_decision("m", d)  # the same decision again (a repair): fine
    with pytest.raises(FlywheelError, match=r"v2-reject .* is unfinished; run `flywheel model repair m`"):
        store.begin_decision("m", Decision("v3-promote", "promote", 3, 1))
    store.complete_decision("m", d)
    store.complete_decision("m", d)  # a replay completes nothing twice
    state = store.state("m")
    assert state.decision is None and state.champion is None
    assert state.rejected_windows == [window] and state.watermark == window.end
    promote = Decision(
        "v3-promote", "promote", 3, None, window=Window(window.end, "2026-03-01T00:00:00+00:00")
    )
    store.begin_decision("m", promote)
    store.complete_decision("m", promote)
    state = store.state("m")
    assert state.champion == 3 and state.watermark == "2026-03-01T00:00:00+00:00"
    assert [w.end for w in state.excluded_windows] == [window.end]


def test_a_run_folder_becomes_its_version_folder_once(tmp_path):
    store = make_store(tmp_path)
    run = store.new_run("m")
    (run.path / "adapter_config.json").write_text("{}")
    v = store.adopt("m", run.run_id, 7)
    assert v.path == StateLayout(tmp_path).version("m", 7) and not run.path.exists()
    assert store.adopt("m", run.run_id, 7).path == v.path  # idempotent (a repair)
    assert store.version("m", 7).run_id == run.run_id and store.versions("m") == [7]
    with pytest.raises(FlywheelError, match="is missing"):
        store.adopt("m", "no-such-run", 8)


def test_state_written_before_typed_windows_still_reads(tmp_path):
    store = make_store(tmp_path)
    path = StateLayout(tmp_path).model_state("m")
    path.write_text(
        '{"champion": 2, "watermark": null, "versions": [], "rejected_windows": [[null, "2026-01-02"]]}'
    )
    state = store.state("m")
    assert state.champion == 2 and state.rejected_windows == [Window(None, "2026-01-02")]


def test_adopt_refuses_a_version_folder_that_holds_another_run(tmp_path):
    store = make_store(tmp_path)
    first, second = store.new_run("m"), store.new_run("m")
    store.adopt("m", first.run_id, 3)
    with pytest.raises(FlywheelError, match=r"holds run .* not run .* registered as v3"):
        store.adopt("m", second.run_id, 3)  # an MLflow store reset: its v3 is not our v3
    assert second.path.is_dir()  # nothing moved


def test_a_model_whose_first_version_never_served_can_be_bootstrapped_again(tmp_path):
    store = make_store(tmp_path)
    frame = pd.DataFrame({"sample_id": ["b"], "text": ["t"], "label": ["y"]})
    info = ModelInfo("m", "text-classification", ["x", "y"], "")
    store.create(info, frame, frame, datetime(2026, 2, 1, tzinfo=UTC))  # v1 was rejected: allowed
    assert store.golden("m").sample_id.tolist() == ["b"]
    promote = Decision("v2-promote", "promote", 2, None)
    store.begin_decision("m", promote)
    with pytest.raises(FlywheelError, match="already exists"):  # mid-decision: not replaced
        store.create(info, frame, frame, datetime(2026, 3, 1, tzinfo=UTC))
    store.complete_decision("m", promote)
    with pytest.raises(FlywheelError, match="already exists"):  # it has a champion
        store.create(info, frame, frame, datetime(2026, 3, 1, tzinfo=UTC))
