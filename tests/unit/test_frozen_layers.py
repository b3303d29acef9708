"""Training the top layers only (``training.lora.layers``): the lower layers' outputs are
computed once per fit (``spec.cache_frozen``) and must give the scores the whole model gives;
the frozen layers must not move; batches of similar length and length-ordered inference must
keep every sample, in its place."""

from __future__ import annotations

import pytest

from flywheel.settings import load_settings
from flywheel.tasks.base import evidence_of, length_buckets, predict
from tests.helpers import tiny_text_spec

LABELS = ["negative", "neutral", "positive"]


def frame(n: int, offset: int = 0):
    import pandas as pd

    words = ["awful terrible bad", "table chair window", "great lovely good"]
    rows = []
    for i in range(offset, offset + n):
        label = i % 3
        text = " ".join([words[label]] * (1 + i % 5)) + f" {i}"  # lengths from 5 to 16+ tokens
        rows.append({"sample_id": f"s{i}", "text": text, "label": LABELS[label], "confidence": 1.0})
    return pd.DataFrame(rows)


def randomised_lora(spec, cfg):
    """A new version's model with LoRA weights that do something (B starts at zero)."""
    import torch

    from training.trainer import lora_model

    model = lora_model(spec, LABELS, cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    return model


def test_cached_lower_layers_give_the_scores_of_the_whole_model():
    import torch

    spec = tiny_text_spec(layers=4, max_length=24)
    cfg = load_settings(training={"lora": {"layers": 2}}).training
    model = randomised_lora(spec, cfg)
    data = spec.dataset(frame(40), LABELS)
    whole = predict(spec, model, data, size=7)
    assert spec.freeze_lower_layers(model, 2) == 2
    cached = spec.cache_frozen(model, data, 5, torch.device("cpu"))
    assert len(cached) == len(data)
    torch.testing.assert_close(predict(spec, model, cached, size=9), whole, atol=1e-5, rtol=1e-4)
    found, loss = evidence_of(spec, model, cached, 6, loss=True)
    assert found["pred"] == whole.argmax(-1).tolist() and loss is not None


def test_only_the_top_layers_move_and_every_layer_trains_when_unset(tmp_path):
    import torch
    from safetensors.torch import load_file

    from training.trainer import fit

    spec = tiny_text_spec(layers=4, max_length=24)
    every = load_settings(
        training={"epochs": 2, "min_steps": 6, "batch_size": 8, "lora": {"layers": None}}
    ).training
    fit(spec, LABELS, frame(48), frame(12, 100), every, tmp_path / "v1", progress=False)
    top = every.model_copy(update={"lora": every.lora.model_copy(update={"layers": 1})})
    result = fit(
        spec, LABELS, frame(48, 200), frame(12, 300), top, tmp_path / "v2", tmp_path / "v1", progress=False
    )
    assert "frozen_layers" in result.phases and "teacher" in result.phases
    before = load_file(str(tmp_path / "v1" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "v2" / "adapter_model.safetensors"))
    lora = [k for k in before if "lora_" in k]
    assert lora and set(lora) <= set(after)
    moved = {k for k in lora if not torch.equal(before[k], after[k])}
    assert moved and all(".layer.3." in k for k in moved), sorted(moved)
    assert any(".layer.0." in k for k in lora)  # v1 trained every layer: the lower ones exist and stayed


def test_length_buckets_keep_every_sample_once_and_group_similar_lengths():
    import random

    import torch

    rng = random.Random(0)
    lengths = [rng.randint(1, 64) for _ in range(1000)]
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    out = length_buckets(order, lengths, 32, torch.Generator().manual_seed(1))
    assert sorted(out) == list(range(1000))
    spread = [
        max(lengths[i] for i in out[s : s + 32]) - min(lengths[i] for i in out[s : s + 32])
        for s in range(0, 992, 32)
    ]
    assert sum(spread) / len(spread) < 16  # a shuffled batch spreads ~60 tokens
    assert len(out[992:]) == 1000 % 32  # the short batch is last, so batches cut the same


@pytest.mark.parametrize("size", [1, 3, 128])
def test_length_ordered_inference_answers_in_the_datasets_order(size):
    import torch

    spec = tiny_text_spec(layers=2, max_length=24)
    model = randomised_lora(spec, load_settings().training)
    data = spec.dataset(frame(17), LABELS)
    one_by_one = torch.cat(
        [predict(spec, model, spec.dataset(frame(17).iloc[[i]], LABELS)) for i in range(17)]
    )
    torch.testing.assert_close(predict(spec, model, data, size=size), one_by_one, atol=1e-5, rtol=1e-4)
    found, _ = evidence_of(spec, model, data, size)
    assert found["pred"] == one_by_one.argmax(-1).tolist()
    assert found["true"] == [i % 3 for i in range(17)]


def test_a_new_version_that_fine_tuning_does_not_improve_is_its_probe(tmp_path):
    """The rule of issue 30: learning rates ~0 cannot beat the probe the head starts from; the
    version is then the probe's state, says so, and predicts what the baseline predicts."""
    import torch

    from training.trainer import fit, load_adapter_model
    from training.version import VersionFolder

    spec = tiny_text_spec(layers=2, max_length=24)
    still = load_settings(
        training={
            "epochs": 2,
            "min_steps": 1,
            "batch_size": 16,
            "learning_rate": 1e-12,
            "head_learning_rate": 1e-12,
        }
    ).training
    result = fit(spec, LABELS, frame(60), frame(30, 500), still, tmp_path / "v1", progress=False)
    assert result.kept == "probe" and result.best_epoch == 0
    record = VersionFolder(tmp_path / "v1", "v1").training_record()
    assert record.kept == "probe" and "beat the baseline" in record.kept_because
    data = spec.dataset(frame(20, 900), LABELS)
    version = predict(spec, load_adapter_model(spec, LABELS, tmp_path / "v1"), data)
    baseline = predict(spec, spec.load_baseline(LABELS, tmp_path / "v1"), data)
    torch.testing.assert_close(version, baseline, atol=1e-5, rtol=1e-4)
    # a retrain from it is never replaced by its own probe
    moved = still.model_copy(update={"learning_rate": 5e-3, "head_learning_rate": 5e-3})
    again = fit(
        spec,
        LABELS,
        frame(60, 1000),
        frame(30, 2000),
        moved,
        tmp_path / "v2",
        tmp_path / "v1",
        progress=False,
    )
    assert again.kept == "trained"
