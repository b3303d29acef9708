"""Every registered task through the same contract (peft's ``TEST_CASES`` style): samples,
the data gate's checks, a model's forward pass, losses and metrics, the gate's defaults,
serving and review. A new task adds one row to ``TEST_CASES``.

The third row is the toy regressor that lives only in ``tests/toy_task/``: the seam takes a
task it was not written for."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

import tests.toy_task  # noqa: F401  registers toy-regression
from flywheel.settings import DataGateSettings, Guard, load_settings
from flywheel.tasks import spec_class, spec_for, tasks
from flywheel.tasks.base import Suite, collate
from tests.helpers import tiny_text_spec


def text_case(tmp_path):
    spec = tiny_text_spec(layers=1)
    rows = [
        {"sample_id": f"t{i}", "text": f"words number {i}", "label": ["neg", "pos"][i % 2]} for i in range(8)
    ]
    path = tmp_path / "text.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return spec, path


def image_case(tmp_path):
    from flywheel.tasks.image.network import RestorationNetConfig
    from training.image_corpus import TRAIN_PHOTOS, restoration_frame

    settings = load_settings(
        state_dir=tmp_path / "state", images={"net": RestorationNetConfig.tiny().to_dict(), "patch": 32}
    )
    spec = spec_for(settings, "image-restoration")
    return spec, restoration_frame(4, "noise:25", 0, photo_names=TRAIN_PHOTOS, size=32)


def toy_case(tmp_path):
    rows = [{"sample_id": f"r{i}", "x": [i / 8, 1 - i / 8, 0.5, -0.5], "y": i / 4} for i in range(8)]
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return spec_class("toy-regression")(), path


TEST_CASES = {"text-classification": text_case, "image-restoration": image_case, "toy-regression": toy_case}


def test_every_registered_task_has_a_row_in_the_table():
    assert set(tasks()) == set(TEST_CASES)


@pytest.fixture(params=sorted(TEST_CASES))
def case(request, tmp_path):
    spec, source = TEST_CASES[request.param](tmp_path)
    frame = spec.load_samples(source)
    labels = spec.labels_of(frame)
    return request.param, spec, frame, labels


def test_the_spec_is_registered_under_its_name_and_declares_its_contract(case):
    name, spec, _, _ = case
    assert spec.name == name and spec_class(name) is type(spec)
    assert spec.primary_metric in spec.shown_metrics and spec.primary_direction in ("max", "min")
    assert spec.live_direction in ("max", "min")
    assert set(spec.feast_fields) >= {c for c in spec.sample_columns if c in spec.feast_fields}
    assert spec.serving_input and spec.serving_output
    # the five caller groups' protocols (flywheel.tasks.protocols): each spec offers every one
    from flywheel.tasks.protocols import DataSpec, Learner, Policy, Reviewer, Server

    for protocol in (DataSpec, Learner, Server, Reviewer, Policy):
        assert isinstance(spec, protocol), protocol.__name__


def test_samples_load_and_pass_the_data_gate_checks(case):
    _, spec, frame, labels = case
    assert {"sample_id", *spec.sample_columns} <= set(frame.columns)
    assert bool(spec.is_sample(frame).all())
    assert set(spec.class_counts(frame, labels)) <= set(labels)
    marked = []
    spec.quarantine_reasons(
        frame, labels, DataGateSettings(), lambda mask, why: marked.append(bool(mask.any()))
    )
    assert not any(marked)  # good samples: nothing quarantined
    suites = spec.expectations(frame.assign(confidence=1.0), labels, DataGateSettings())
    assert suites and all(isinstance(s, Suite) for s in suites)
    assert all(isinstance(v, (str, type(None))) for v in spec.shown_example(frame.iloc[0]).values())


def test_a_model_trains_scores_and_is_judged_by_the_tasks_policy(case):
    _, spec, frame, labels = case
    data = spec.dataset(frame, labels)
    assert len(data) == len(frame)
    model = spec.build(labels)
    batch = collate([data[i] for i in range(len(data))])
    out = spec.forward(model, batch)
    loss = spec.task_loss(out, batch)
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    loss.backward()  # the loss reaches the weights
    assert float(spec.distill_loss(out.detach(), out.detach(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    evidence = spec.evidence(out.detach(), batch)
    metrics = spec.metrics(evidence, labels)
    assert set(spec.shown_metrics) <= set(metrics)
    per_sample = spec.per_sample(evidence)
    assert len(per_sample[spec.primary_metric]) == len(frame)
    baseline = spec.fit_baseline(data, labels, seed=0)
    assert baseline is not None
    guards = spec.default_guards()
    assert guards and all(isinstance(g, Guard) and g.metric in per_sample for g in guards)
    assert {k.split(".", 1)[1] for k in spec.default_floors()} <= set(metrics)
    assert (
        spec.baseline_guard(load_settings().promotion.baseline, spec.primary_metric).metric
        == spec.primary_metric
    )


def test_a_model_serves_the_smoke_input_and_its_answers_fit_the_contract(case):
    _, spec, _, labels = case
    model = spec.build(labels)
    model.eval()
    smoke = spec.serving_smoke()
    answers = spec.serve(model, smoke, labels)
    assert isinstance(answers, pd.DataFrame) and len(answers) == len(smoke)
    assert spec.serving_output in answers.columns
    assert isinstance(spec.answer(answers.iloc[0].to_dict()), dict)
