"""The retrain flow: exit codes (the contract cron and Airflow read), steps, stops, the data gate's
verdict on a whole window, and one retrain at a time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pandas as pd
import pytest

from flywheel.layout import StateLayout
from flywheel.locks import file_lock
from flywheel.settings import load_settings
from orchestration.flow import (
    EXIT_BUSY,
    EXIT_DATA_REJECTED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    Outcome,
    Retrain,
    Stop,
    retrain,
    run_steps,
    step_data_gate,
)
from training.model_store import ModelInfo, ModelStore
from training.run import TrainedRun
from training.version import Lineage

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("promoted", EXIT_OK),
        ("not-ready", EXIT_OK),
        ("rejected", EXIT_REJECTED),
        ("failed", EXIT_FAILED),
        ("stopped", EXIT_FAILED),
        ("busy", EXIT_BUSY),
        ("data-rejected", EXIT_DATA_REJECTED),
    ],
)
def test_each_outcome_has_its_documented_exit_code(status, code):
    assert Outcome("m", status).exit_code == code
    assert (EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_BUSY, EXIT_DATA_REJECTED) == (0, 10, 11, 12, 13)


def test_steps_run_in_order_until_one_gives_an_outcome_and_a_stop_ends_at_a_boundary():
    seen = []

    def step(name, outcome=None):
        def run(r):
            seen.append(name)
            if outcome:
                r.outcome = Outcome(r.model, outcome)
            if name == "fit":
                r.stop.set()  # SIGTERM arrives while training

        return name, run

    r = Retrain(settings=None, model="m", stop=threading.Event())
    steps = [step("dataset"), step("fit"), step("evaluate"), step("register"), step("decide", "promoted")]
    with pytest.raises(Stop, match="before the evaluate step"):
        run_steps(r, steps)
    assert seen == ["dataset", "fit"]

    seen.clear()
    r = Retrain(settings=None, model="m", stop=threading.Event())
    r.stop.set()
    assert run_steps(r, [step("decide", "promoted")]).status == "promoted"  # a registered version is decided
    assert (
        run_steps(Retrain(None, "m"), [step("readiness", "not-ready"), step("dataset")]).status == "not-ready"
    )
    assert seen == ["decide", "readiness"]


def _model_with_window(tmp_path, frame):
    settings = load_settings(state_dir=tmp_path, training={"data_gate": {"min_per_class": 5}})
    store = ModelStore(tmp_path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store.create(ModelInfo("m", "text-classification", LABELS, ""), frame, frame, start)
    folder = store.new_run("m")
    folder.save_dataset(
        frame.assign(origin="new"), frame.head(0), {"golden": frame, "old": frame, "new": frame}
    )
    lineage = Lineage(start.isoformat(), datetime(2026, 1, 2, tzinfo=UTC).isoformat(), new_samples=len(frame))
    folder.save_lineage(lineage)
    return settings, store, TrainedRun("m", folder, lineage, champion=1)


def frame_of(labels):
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(len(labels))],
            "text": [f"text {i}" for i in range(len(labels))],
            "label": labels,
            "confidence": 1.0,
        }
    )


def test_a_window_the_data_gate_refuses_as_a_whole_is_recorded_and_consumed(tmp_path):
    settings, store, run = _model_with_window(tmp_path, frame_of(["positive"] * 40 + ["furious"]))
    r = Retrain(settings, "m", run=run)
    step_data_gate(r)
    assert r.outcome.status == "data-rejected" and r.outcome.exit_code == EXIT_DATA_REJECTED
    assert "label (count per label)" in r.outcome.reasons[0]  # no negative or neutral samples
    assert r.outcome.quarantine.rows == 2  # the unknown label (in train and new holdout), set aside first
    state = store.state("m")
    assert state.watermark == run.lineage.window_end  # the loop moves on
    assert state.data_rejected[0].end == run.lineage.window_end and state.data_rejected[0].reasons
    assert state.excluded_windows == state.data_rejected  # never replayed
    from orchestration import history

    entry = history.entries(tmp_path, "m")[-1]
    assert (
        entry.action == "data-rejected" and entry.reason.startswith("data_gate: ") and entry.version is None
    )


def test_a_window_with_a_few_bad_samples_trains_on_the_rest(tmp_path):
    labels = LABELS * 10 + ["furious"]
    frame = frame_of(labels)
    frame.loc[3, "text"] = "x" * 5000
    settings, store, run = _model_with_window(tmp_path, frame)
    r = Retrain(settings, "m", run=run)
    step_data_gate(r)
    assert (
        r.outcome is None and run.data_gate.success and run.lineage.quarantined == 2 * 2
    )  # train + new holdout
    train, _, holdouts = run.folder.dataset()
    assert len(train) == 29 and len(holdouts["new"]) == 29
    assert store.state("m").watermark == "2026-01-01T00:00:00+00:00"  # consumed only when decided


def test_a_second_retrain_of_a_model_reports_busy(tmp_path):
    settings = load_settings(state_dir=tmp_path)
    with file_lock(StateLayout.of(settings).retrain_lock("m")):
        outcome = retrain(settings, "m")
    assert outcome.status == "busy" and outcome.exit_code == EXIT_BUSY


def test_a_window_whose_new_samples_are_all_quarantined_is_refused_not_trained_on_replay(tmp_path):
    good = frame_of(LABELS * 10)
    settings, store, run = _model_with_window(tmp_path, good)
    bad_new = frame_of(["furious"] * 12).assign(sample_id=lambda f: "n" + f.sample_id, origin="new")
    train = pd.concat([bad_new, good.assign(origin="replay")], ignore_index=True)
    run.folder.save_dataset(train, good.head(0), {"golden": good, "old": good, "new": good.head(0)})
    r = Retrain(settings, "m", run=run)
    step_data_gate(r)
    assert r.outcome.status == "data-rejected"
    assert "new samples left to train on after quarantine" in r.outcome.reasons[0]
    assert store.state("m").data_rejected[0].end == run.lineage.window_end


def test_the_retrain_threshold_is_the_setting_or_the_tasks_default():
    from flywheel.settings import load_settings
    from flywheel.tasks import spec_class
    from orchestration.flow import retrain_threshold

    image, text = spec_class("image-restoration"), spec_class("text-classification")
    assert retrain_threshold(load_settings(), image) == 200
    assert retrain_threshold(load_settings(), text) == 1000
    assert retrain_threshold(load_settings(training={"min_new_samples": 50}), image) == 50
