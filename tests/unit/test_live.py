"""The live ledger: predictions kept, feedback joined by prediction_id, outcomes per version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flywheel.events import validate_event
from pipelines.ingest import live_value
from pipelines.live import LiveLedger, version_number
from pipelines.predictions import PredictionRecord
from pipelines.records import Origin, RoutedRecord
from tests.helpers import make_event

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def served(pid: str, version: int, label: str, at: datetime = T0, shadow_of: str | None = None):
    prediction = {"label": label, "confidence": 0.8}
    return PredictionRecord(pid, "sentiment", version, "text-classification", at, prediction, shadow_of)


def feedback(i: int, pid: str | None, label: str | None = "positive", accepted: bool = False, **fields):
    overrides = {"prediction": None, "model_version": None, "prediction_id": pid, **fields}
    overrides["feedback"] = {"accepted": True} if accepted else ({"label": label} if label else None)
    event = validate_event({k: v for k, v in make_event(i, **overrides).items() if v is not None})
    return RoutedRecord.of(event, False, 0, Origin("t.raw", 0, i))


def test_feedback_with_only_a_prediction_id_is_joined_to_the_served_version(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    joined = ledger.ingest(
        [served("p-1", 3, "positive"), served("p-2", 3, "negative")],
        [feedback(1, "p-1"), feedback(2, "p-2"), feedback(3, "p-1", label=None, accepted=True)],
        live_value,
    )
    assert [r.model_version for r in joined] == ["3", "3", "3"]
    assert [r.prediction_label for r in joined] == ["positive", "negative", "positive"]
    assert joined[2].label == "positive"  # 'accepted' vouches for the joined prediction
    outcomes = ledger.outcomes("sentiment", 3)
    assert sorted(o.value for o in outcomes) == [0.0, 1.0]  # one outcome per served prediction
    assert all(o.predicted_at == T0.timestamp() for o in outcomes)


def test_a_flood_of_feedback_on_one_prediction_counts_once_and_the_served_answer_wins(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    claims = [feedback(i, "p-1", label="negative") for i in range(50)]
    lying = feedback(99, "p-1", label="positive", prediction={"label": "negative", "confidence": 0.1})
    joined = ledger.ingest([served("p-1", 3, "positive")], [*claims, lying], live_value)
    assert ledger.counts()["outcomes"] == 1
    assert [o.value for o in ledger.outcomes("sentiment", 3)] == [1.0]  # the last label, the served answer
    assert joined[-1].prediction_label == "positive" and joined[-1].model_version == "3"


def test_a_rejected_prediction_counts_as_wrong(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    rejected = feedback(1, "p-1", label=None)
    rejected = RoutedRecord.of(
        validate_event({**rejected.event, "feedback": {"accepted": False}}), False, 0, Origin("t.raw", 0, 1)
    )
    ledger.ingest([served("p-1", 3, "positive")], [rejected], live_value)
    assert [o.value for o in ledger.outcomes("sentiment", 3)] == [0.0]


def test_feedback_before_its_prediction_waits_and_is_completed(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    ledger.ingest([], [feedback(1, "p-late")], live_value)
    assert ledger.counts() == {"predictions": 0, "outcomes": 0, "pending": 1}
    ledger.ingest([served("p-late", 2, "positive")], [], live_value)
    assert ledger.counts() == {"predictions": 1, "outcomes": 1, "pending": 0}
    assert [o.version for o in ledger.outcomes("sentiment", 2)] == [2]


def test_redelivery_is_harmless_and_a_named_version_still_counts(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    batch = ([served("p-1", 1, "positive")], [feedback(1, "p-1")])
    ledger.ingest(*batch, live_value)
    ledger.ingest(*batch, live_value)  # a crash between write and commit re-delivers the batch
    assert ledger.counts()["outcomes"] == 1
    own = RoutedRecord.of(validate_event(make_event(9, model_version="v4")), False, 0, Origin("t.raw", 0, 9))
    ledger.ingest([], [own], live_value)
    # kept, but never judged: no served prediction stands behind a version an event names itself
    assert ledger.outcomes("sentiment", 4) == []
    assert [o.value for o in ledger.outcomes("sentiment", 4, served=False)] == [1.0]


def test_another_models_prediction_id_is_not_joined(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    other = PredictionRecord(
        "p-x", "other-model", 7, "text-classification", T0, {"label": "a", "confidence": 1.0}
    )
    ledger.ingest([other], [feedback(1, "p-x")], live_value)
    assert ledger.outcomes("sentiment", 7) == [] and ledger.outcomes("other-model", 7) == []


def test_shadow_predictions_are_judged_on_the_same_answer(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    ledger.ingest(
        [served("p-1", 3, "positive"), served("s-1", 4, "negative", shadow_of="p-1")],
        [feedback(1, "p-1")],
        live_value,
    )
    assert [o.value for o in ledger.outcomes("sentiment", 3)] == [1.0]
    assert [o.value for o in ledger.outcomes("sentiment", 4, shadow=True)] == [0.0]
    assert ledger.outcomes("sentiment", 4) == []  # shadow outcomes never count as served ones


def test_windows_by_time_and_count(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    preds = [served(f"p-{i}", 1, "positive", T0 + timedelta(minutes=i)) for i in range(10)]
    ledger.ingest(preds, [feedback(i, f"p-{i}") for i in range(10)], live_value)
    switch = (T0 + timedelta(minutes=6)).timestamp()
    before = ledger.outcomes("sentiment", 1, predicted_before=switch, limit=3)
    assert [o.predicted_at for o in before] == [(T0 + timedelta(minutes=i)).timestamp() for i in (3, 4, 5)]
    assert len(ledger.outcomes("sentiment", 1, predicted_after=switch)) == 4
    assert ledger.prune(T0 + timedelta(minutes=5)) == 5 and ledger.counts()["outcomes"] == 10


def test_readers_of_a_missing_ledger_see_nothing(tmp_path):
    reader = LiveLedger(tmp_path / "none.sqlite", readonly=True)
    assert reader.outcomes("m", 1) == [] and reader.per_version("m") == []


def test_version_numbers():
    assert [version_number(v) for v in ("4", "v12", "V3", "latest", "", None, "4a", "٣")] == [
        4, 12, 3, None, None, None, None, None
    ]  # fmt: skip


def test_the_image_live_value_is_the_psnr_of_the_prediction_against_the_target():
    import numpy as np

    from flywheel.images import png_b64
    from flywheel.tasks.image import ImageRestoration

    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    noisy = np.clip(target.astype(int) + rng.integers(-8, 9, target.shape), 0, 255).astype(np.uint8)
    event = validate_event(
        make_event(
            1,
            task="image-restoration",
            input={"image_png_b64": png_b64(noisy)},
            prediction={"image_png_b64": png_b64(noisy)},
            feedback={"target_png_b64": png_b64(target)},
        )
    )
    value = ImageRestoration.live_value(RoutedRecord.of(event, False, 0, Origin("t.raw", 0, 1)))
    mse = np.mean((noisy.astype(float) - target) ** 2) / 255**2
    assert value == pytest.approx(-10 * np.log10(mse))
    same = validate_event(
        make_event(
            2,
            task="image-restoration",
            input={"image_png_b64": png_b64(target)},
            prediction={"image_png_b64": png_b64(target)},
            feedback={"accepted": True},
        )
    )
    # an accept says nothing about the pixels: no PSNR from it
    assert ImageRestoration.live_value(RoutedRecord.of(same, False, 0, Origin("t.raw", 0, 2))) is None


@pytest.mark.parametrize(
    "forged",
    [
        b"\xff",
        b"[]",
        b'{"prediction_id": "p-1"}',
        b'{"model_name": "m", "model_version": 1, "task": "t",'
        b' "predicted_at": "2026-11-01T00:00:00+00:00", "prediction": {}}',
        b'{"prediction_id": "p 1", "model_name": "m", "model_version": 1, "task": "t",'
        b' "predicted_at": "2026-11-01T00:00:00+00:00", "prediction": {}}',
        b'{"prediction_id": "p-1", "model_name": "m", "model_version": 99999999999999999999, "task": "t",'
        b' "predicted_at": "2026-11-01T00:00:00+00:00", "prediction": {}}',
        b'{"prediction_id": "p-1", "model_name": "m", "model_version": 1, "task": "t",'
        b' "predicted_at": "0001-01-01T00:00:00+01:00", "prediction": {}}',
        b'{"prediction_id": "p-1", "model_name": "m", "model_version": 1, "task": "t",'
        b' "predicted_at": "2999-01-01T00:00:00+00:00", "prediction": {}}',
        b'{"prediction_id": "p-1", "model_name": "../m", "model_version": 1, "task": "t",'
        b' "predicted_at": "2026-11-01T00:00:00+00:00", "prediction": {}}',
        b'{"prediction_id": "p-1", "model_name": "m", "model_version": true, "task": "t",'
        b' "predicted_at": "2026-11-01T00:00:00+00:00", "prediction": {}}',
        b'{"prediction_id": "p-1", "model_name": "m", "model_version": 1, "task": "t",'
        b' "predicted_at": "2026-11-01T00:00:00+00:00", "prediction": {"label": {"deep": 1}}}',
    ],
)
def test_a_forged_prediction_record_is_refused_with_a_reason(forged):
    from pipelines.predictions import PredictionRecordError

    with pytest.raises(PredictionRecordError, match="prediction record"):
        PredictionRecord.from_json(forged)


def test_a_prediction_record_round_trips():
    record = served("p-1", 3, "positive", shadow_of="p-0")
    assert PredictionRecord.from_json(record.to_json()) == record


def test_a_shadow_prediction_logged_after_its_feedback_was_joined_is_still_judged(tmp_path):
    ledger = LiveLedger(tmp_path / "live.sqlite")
    ledger.ingest([served("p-1", 3, "positive")], [feedback(1, "p-1")], live_value)
    ledger.ingest([served("s-1", 4, "negative", shadow_of="p-1")], [], live_value)
    assert [o.value for o in ledger.outcomes("sentiment", 4, shadow=True)] == [0.0]
    assert [o.value for o in ledger.outcomes("sentiment", 3)] == [1.0]
