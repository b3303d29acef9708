"""Training logic on a tiny BERT config: adapters, losses, trainer, gate, splits."""

from __future__ import annotations

import pandas as pd
import pytest

from flywheel.settings import DataGateSettings, load_settings
from flywheel.tasks import get_task, tasks
from flywheel.tasks.base import predict
from tests.helpers import tiny_text_spec
from training.data import bucket, split_by_hash, stratified_sample
from training.data_gate import check_batch, quarantine

LABELS = ["negative", "neutral", "positive"]
WORDS = {"negative": "awful terrible bad", "neutral": "table chair window", "positive": "great lovely good"}


def tiny_adapter():
    return tiny_text_spec(layers=2)


TEXT = get_task("text-classification")  # the data gate's checks are the spec's; no model is built


def toy_frame(n: int, offset: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(offset, offset + n):
        label = LABELS[i % 3]
        rows.append({"sample_id": f"s{i}", "text": f"{WORDS[label]} {i}", "label": label, "confidence": 1.0})
    return pd.DataFrame(rows)


def test_the_registry_names_the_tasks_and_rejects_unknown_ones():
    assert "text-classification" in tasks()
    with pytest.raises(Exception, match="unknown task 'speech'"):
        get_task("speech")


def test_metrics_accuracy_macro_f1_per_class():
    import torch

    adapter = tiny_adapter()
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    found = adapter.evidence(logits, {"labels": torch.tensor([0, 1, 2, 2])})
    m = adapter.metrics(found, LABELS)
    assert adapter.per_sample(found) == {"accuracy": [1.0, 1.0, 0.0, 1.0]}
    assert m["accuracy"] == 0.75
    assert m["per_class_accuracy"] == {"negative": 1.0, "neutral": 1.0, "positive": 0.5}
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_distillation_loss_is_zero_for_identical_outputs_and_positive_otherwise():
    import torch

    adapter = tiny_adapter()
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert float(adapter.distill_loss(a, a, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(adapter.distill_loss(a, a.flip(-1), 2.0)) > 0.1


def test_fit_learns_saves_safetensors_and_reloads_to_identical_logits(tmp_path):
    import torch

    from training.trainer import fit, load_adapter_model

    adapter = tiny_adapter()
    cfg = load_settings(
        training={"epochs": 4, "batch_size": 16, "learning_rate": 5e-3, "patience": 4}
    ).training
    result = fit(adapter, LABELS, toy_frame(96), toy_frame(24, 1000), cfg, tmp_path / "v1", progress=False)
    losses = [h["train_loss"] for h in result.history if h["epoch"] > 0]
    assert losses[-1] < losses[0]
    assert (tmp_path / "v1" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "v1" / "training_config.json").is_file()
    batch = adapter.dataset(toy_frame(12, 2000), LABELS)
    first = predict(adapter, load_adapter_model(adapter, LABELS, tmp_path / "v1"), batch)
    again = predict(adapter, load_adapter_model(adapter, LABELS, tmp_path / "v1"), batch)
    assert torch.equal(first, again)

    # A second version distils from the first: the student starts from the champion adapter.
    result2 = fit(
        adapter,
        LABELS,
        toy_frame(48, 500),
        toy_frame(12, 3000),
        cfg,
        tmp_path / "v2",
        champion_dir=tmp_path / "v1",
        progress=False,
    )
    assert result2.steps > 0 and (tmp_path / "v2" / "adapter_model.safetensors").is_file()


def test_the_new_head_beats_chance_within_the_step_floor_and_starts_at_the_probe(tmp_path):
    """One epoch of 24 samples is 2 steps; the floor makes it 30. Chance is 1/3."""
    from flywheel.tasks import BASELINE_FILE
    from flywheel.tasks.text.network import HEAD_FILE
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model

    adapter = tiny_adapter()
    cfg = load_settings(training={"epochs": 1, "min_steps": 30, "batch_size": 16}).training
    result = fit(adapter, LABELS, toy_frame(24), toy_frame(9, 1000), cfg, tmp_path / "v1", progress=False)
    assert result.steps == 30 and result.history[0]["epoch"] == 0  # the probe-initialised start
    assert (tmp_path / "v1" / HEAD_FILE).is_file() and (tmp_path / "v1" / BASELINE_FILE).is_file()
    roles = {
        "candidate": load_adapter_model(adapter, LABELS, tmp_path / "v1"),
        "baseline": adapter.load_baseline(LABELS, tmp_path / "v1"),
    }
    report = evaluate(adapter, LABELS, roles, {"golden": toy_frame(60, 5000)})
    assert report.value("golden", "candidate") >= 0.8 and report.value("golden", "baseline") >= 0.8
    assert len(report.scores("golden", "candidate")) == 60


def test_a_version_saved_before_the_head_file_still_loads_with_its_own_head(tmp_path):
    """Versions from before the sentence head: BertForSequenceClassification (pooler on [CLS])."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.trainer import load_adapter_model

    adapter = tiny_adapter()
    torch.manual_seed(3)
    legacy = get_peft_model(
        adapter._legacy(LABELS),
        LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"]),
    )
    legacy.save_pretrained(str(tmp_path / "old"), safe_serialization=True)
    batch = adapter.dataset(toy_frame(6), LABELS)
    loaded = load_adapter_model(adapter, LABELS, tmp_path / "old")
    assert type(loaded.get_base_model()).__name__ == "BertForSequenceClassification"
    assert torch.allclose(predict(adapter, legacy, batch), predict(adapter, loaded, batch), atol=1e-6)


def test_loading_a_version_leaves_the_callers_random_state_alone(tmp_path):
    """``fit`` seeds with training.seed, then loads the champion: the load must not reseed."""
    import torch

    from training.trainer import fit, load_adapter_model, seed_everything

    adapter = tiny_adapter()
    cfg = load_settings(training={"epochs": 1, "min_steps": 0, "batch_size": 16}).training
    fit(adapter, LABELS, toy_frame(16), toy_frame(0), cfg, tmp_path / "v1", progress=False)
    seed_everything(5)
    expected = torch.rand(3)
    seed_everything(5)
    load_adapter_model(adapter, LABELS, tmp_path / "v1")
    assert torch.equal(torch.rand(3), expected)


def test_training_is_reproducible_with_a_seed(tmp_path):
    import torch

    from training.trainer import fit, load_adapter_model

    adapter = tiny_adapter()
    cfg = load_settings(training={"epochs": 1, "batch_size": 16}).training
    batch = adapter.dataset(toy_frame(8, 5000), LABELS)
    outs = []
    for name in ("a", "b"):
        fit(adapter, LABELS, toy_frame(32), toy_frame(8, 100), cfg, tmp_path / name, progress=False)
        outs.append(predict(adapter, load_adapter_model(adapter, LABELS, tmp_path / name), batch))
    assert torch.allclose(outs[0], outs[1])


def test_hash_splits_are_stable_and_disjoint():
    frame = toy_frame(1000)
    train, val, hold = split_by_hash(frame, 0.1, 0.1)
    assert len(train) + len(val) + len(hold) == 1000
    assert set(train.sample_id).isdisjoint(hold.sample_id) and set(val.sample_id).isdisjoint(hold.sample_id)
    assert 50 < len(hold) < 150
    bigger = toy_frame(2000)
    assert set(hold.sample_id) <= set(split_by_hash(bigger, 0.1, 0.1)[2].sample_id)  # stable as data grows
    assert 0 <= bucket("x") < 1 and bucket("x") == bucket("x")


def test_the_golden_share_is_stratified_and_stable():
    from training.data import stratified_share

    frame = pd.concat([toy_frame(300), toy_frame(30, 9000).assign(label="neutral")])
    rest, golden = stratified_share(frame, 0.1, salt="golden:")
    counts = golden["label"].value_counts().to_dict()
    assert counts == {"negative": 10, "neutral": 13, "positive": 10}
    assert set(rest.sample_id).isdisjoint(golden.sample_id) and len(rest) + len(golden) == len(frame)
    assert stratified_share(frame, 0.1, salt="golden:")[1].sample_id.tolist() == golden.sample_id.tolist()


def test_stratified_sample_keeps_every_class():
    frame = pd.concat([toy_frame(300), toy_frame(3, 9000).assign(label="neutral")])
    sample = stratified_sample(frame, 30)
    assert set(sample.label) == set(LABELS) and 25 <= len(sample) <= 35


def test_the_data_gate_quarantines_bad_samples_and_keeps_the_batch():
    """One bad event never blocks the loop: each is set aside with its reason, the rest passes."""
    good = toy_frame(60)
    clean, report = check_batch(good, LABELS, DataGateSettings(), TEXT)
    assert report.success and len(clean) == 60 and report.quarantine.rows == 0
    bad = good.copy()
    bad.loc[0, "label"] = "furious"
    bad.loc[1, "sample_id"] = bad.loc[2, "sample_id"]
    bad.loc[3, "confidence"] = 7.0
    bad.loc[4, "text"] = "x" * 5000
    bad.loc[5, "text"] = None
    clean, report = check_batch(bad, LABELS, DataGateSettings(max_text_chars=2000), TEXT)
    assert report.success and len(clean) == 55, report.text()
    q = report.quarantine
    assert q.rows == 5 and sum(q.by_reason.values()) == 5
    assert q.by_reason["text longer than 2000 chars"] == 1
    assert any(r.startswith("label not in the model's label set") for r in q.by_reason)
    assert {e["sample_id"] for e in q.examples} >= {"s0", "s4"}
    assert (
        "5 quarantined" not in report.text() and "1 quarantined: text longer than 2000 chars" in report.text()
    )


def test_the_data_gate_refuses_a_batch_that_fails_as_a_whole_and_names_why():
    frame = toy_frame(60)
    _, report = check_batch(frame, LABELS, DataGateSettings(min_per_class=25), TEXT)
    assert not report.success
    assert "label (count per label)" in report.text()  # 19-20 per class < 25
    assert report.text().startswith("Data gate (Great Expectations) on 60 training rows: FAILED")
    skewed = frame.assign(label="positive")
    _, report = check_batch(skewed, LABELS, DataGateSettings(max_class_share=0.9), TEXT)
    assert not report.success and any("positive: 60 (100%)" in r for r in report.reasons)


def test_quarantine_survives_the_worst_values():
    frame = pd.DataFrame(
        {
            "sample_id": [None, "a", "a", "b", "c"],
            "text": ["t", "t", "t", float("nan"), ""],
            "label": ["negative", None, "negative", "negative", "negative"],
            "confidence": [0.5, "high", 0.5, -1, 0.5],
        }
    )
    clean, held = quarantine(frame, LABELS, DataGateSettings(), TEXT)
    assert held.rows == 5 and clean.empty, held.by_reason


def test_quarantine_judges_types_not_just_values():
    frame = pd.DataFrame(
        {
            "sample_id": ["a", 7, "c", "d", "e"],
            "text": ["fine", "fine", 42, "   ", "fine"],
            "label": ["negative", "negative", "negative", "negative", 1],
            "confidence": [1.0] * 5,
        }
    )
    clean, held = quarantine(frame, LABELS, DataGateSettings(), TEXT)
    assert clean.sample_id.tolist() == ["a"]
    assert set(held.by_reason) == {
        "sample_id is not a string",
        "text is not a string",
        "text is blank",
        f"label not in the model's label set {LABELS}",
    }
    _, report = check_batch(frame.iloc[1:], LABELS, DataGateSettings(min_per_class=0), TEXT)
    assert not report.success and "batch not empty after quarantine" in report.text()  # nothing left


def test_jsonl_lines_end_at_newline_only(tmp_path):
    """A text holding U+0085 or U+2028 (JSON leaves them unescaped) is one line, not three."""
    import json

    from flywheel.tasks.base import read_table

    path = tmp_path / "rows.jsonl"
    rows = [
        {"sample_id": "a", "text": "one\x85two\u2028three", "label": "x"},
        {"sample_id": "b", "text": "b", "label": "y"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    frame = read_table(path, "text and label columns")
    assert list(frame["text"]) == ["one\x85two\u2028three", "b"]


def test_a_burst_window_is_capped_to_a_stratified_sample_and_the_rest_counted():
    import pandas as pd

    from training.dataset import cap_window

    new = pd.DataFrame({"sample_id": [f"s{i:04d}" for i in range(1000)], "label": ["a"] * 800 + ["b"] * 200})
    kept, left_out = cap_window(new, 100, 0, "label")
    assert len(kept) == 100 and left_out == 900
    assert kept["label"].value_counts().to_dict() == {"a": 80, "b": 20}  # class shares kept
    again, _ = cap_window(new, 100, 0, "label")
    assert list(again["sample_id"]) == list(kept["sample_id"])  # the same rows on a rerun
    assert cap_window(new, None, 0, "label")[0] is new
    whole, none_left = cap_window(new, 5000, 0, "label")
    assert whole is new and none_left == 0
