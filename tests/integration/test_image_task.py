"""The image-restoration task through the real loop: stream job → image store + Feast → training
→ promotion gate, on real photo patches; broken images end on the dead-letter topic."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from feature_repo.store import historical_samples, open_store
from flywheel.images import open_image_store, png_b64, png_size
from flywheel.kafka import Topics
from orchestration.serving import ChampionPredictor
from pipelines.dlq import DlqRecord
from pipelines.http_api import create_app
from pipelines.ingest import Ingestor
from pipelines.live import LiveLedger
from pipelines.stats import read_topic
from tests.helpers import small_training
from tests.integration.kafka_utils import produce_raw
from tests.integration.test_stream_job import run_bounded, settled_accounting

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "den"


def small(settings):
    from flywheel.tasks.image.network import RestorationNetConfig

    images = settings.images.model_copy(update={"net": RestorationNetConfig.tiny().to_dict(), "patch": 32})
    s = small_training(
        settings,
        min_steps=40,
        batch_size=8,
        learning_rate=3e-3,
        head_learning_rate=3e-3,
        min_new_samples=20,
        max_old_holdout=16,
    )
    return s.model_copy(update={"images": images})


def events(frame, prefix: str) -> list[dict]:
    from training.image_corpus import feedback_events

    out = feedback_events(frame, MODEL, source="tests")
    for e in out:
        e["event_id"] = f"{prefix}-{e['event_id']}"[:128]
    return out


def broken(good: dict) -> list[tuple[bytes, str]]:
    """(raw value, what its DLQ reason must say): a GIF, a truncated PNG, a target of another
    size, an image over the size bound."""
    import numpy as np

    png = base64.b64decode(good["input"]["image_png_b64"])
    cases = []
    for i, (path, value, why) in enumerate(
        [
            (("input", "image_png_b64"), base64.b64encode(b"GIF89a....").decode(), "not a PNG"),
            (("input", "image_png_b64"), base64.b64encode(png[: len(png) // 2]).decode(), "PNG"),
            (
                ("feedback", "target_png_b64"),
                png_b64(np.zeros((40, 24, 3), np.uint8)),
                "must be the input's size",
            ),
            (("input", "image_png_b64"), png_b64(np.zeros((8, 600, 3), np.uint8)), "600"),
        ]
    ):
        e = json.loads(json.dumps(good))
        e["event_id"] = f"bad-{i}"
        e[path[0]][path[1]] = value
        cases.append((json.dumps(e).encode(), why))
    return cases


def test_images_flow_through_the_stream_into_feast_and_train_a_promoted_then_a_rejected_version(settings):
    from orchestration.flow import bootstrap_model, retrain
    from training.image_corpus import GOLDEN_PHOTOS, TRAIN_PHOTOS, restoration_frame

    s = small(settings)
    boot = restoration_frame(64, "noise:20", seed=0, photo_names=TRAIN_PHOTOS, size=32)
    golden = restoration_frame(24, "noise:30", seed=5, photo_names=GOLDEN_PHOTOS, size=32)
    first = bootstrap_model(s, MODEL, "image-restoration", boot, golden=golden, progress=False)
    assert first.status == "promoted", first.reasons
    assert any("golden.psnr gain over baseline" in r for r in first.reasons)

    # A round of honest feedback and four broken images through the real stream job.
    good = events(restoration_frame(40, "noise:30", seed=1, photo_names=TRAIN_PHOTOS, size=32), "r1")
    bad = broken(good[0])
    values = [json.dumps(e).encode() for e in good] + [v for v, _ in bad]
    stops = produce_raw(s, values)
    run_bounded(s, stops)
    acc = settled_accounting(s)
    assert acc.balanced and acc.clean == len(good) and acc.dlq == len(bad), acc
    dlq = [DlqRecord.from_json(m.value()) for m in read_topic(s, Topics.from_settings(s).dlq)]
    reasons = [" ".join([d.message, *(f"{f}: {m}" for f, m in d.problems)]) for d in dlq]
    for _, why in bad:
        assert any(why in r for r in reasons), (why, reasons)

    # The ingestor writes the images to the store; Feast rows hold URIs and hashes, not bytes.
    store = open_store(s)
    Ingestor(s, store).run(until_caught_up=True)
    rows = historical_samples(store, s, MODEL, None, None)
    assert len(rows) == len(good) and "image_png_b64" not in rows.columns
    images = open_image_store(s.image_store_uri)
    first_row = rows.iloc[0]
    assert images.get(first_row["target_uri"]) and first_row["target_uri"].endswith(
        f"{first_row['target_sha256']}.png"
    )

    second = retrain(s, MODEL, if_ready=True, feast_store=store)
    assert second.status == "promoted", second.reasons
    assert second.report.value("golden", "candidate") > second.report.value("golden", "champion")

    # Served: /v1/predict restores with v2; the users' targets, naming only the prediction_id,
    # come back through the stream; the ingestor joins them: live PSNR of v2's predictions.
    served = events(restoration_frame(6, "noise:30", seed=3, photo_names=TRAIN_PHOTOS, size=32), "live")
    with TestClient(create_app(s, predictor=ChampionPredictor(s))) as api:
        inputs = [{"image_png_b64": e["input"]["image_png_b64"]} for e in served]
        answer = api.post("/v1/predict", json={"model_name": MODEL, "inputs": inputs})
    assert answer.status_code == 200 and answer.json()["model_version"] == str(second.version), answer.text
    for e, p in zip(served, answer.json()["predictions"], strict=True):
        assert png_size(base64.b64decode(p["image_png_b64"])) == png_size(
            base64.b64decode(e["input"]["image_png_b64"])
        )
        e["prediction_id"] = p["prediction_id"]
    more = produce_raw(s, [json.dumps(e).encode() for e in served])  # six events: maybe not every partition
    run_bounded(s, {p: max(stops.get(p, 0), more.get(p, 0)) for p in {*stops, *more}})
    Ingestor(s, store).run(until_caught_up=True)
    ledger = LiveLedger.of(s, readonly=True)
    live = ledger.outcomes(MODEL, second.version)
    ledger.close()
    assert len(live) == len(served) and all(20 < o.value < 100 for o in live), live

    # A round whose targets belong to other patches: the label screen finds them far from the
    # champion's restorations (or shifted) and refuses the window before fitting.
    swapped = restoration_frame(40, "noise:30", seed=2, photo_names=TRAIN_PHOTOS, size=32, corrupt="swap")
    run_bounded(s, produce_raw(s, [json.dumps(e).encode() for e in events(swapped, "r2")]))
    Ingestor(s, store).run(until_caught_up=True)
    third = retrain(s, MODEL, if_ready=True, feast_store=store)
    assert third.status == "data-rejected" and third.version is None, third.reasons
    assert "labels_suspect" in third.reasons[0] and "target far from" in third.reasons[0], third.reasons
    # with the screen off, the candidate learns mush and the PSNR guard refuses it
    unscreened = s.model_copy(
        update={
            "training": s.training.model_copy(
                update={"label_screen": s.training.label_screen.model_copy(update={"enabled": False})}
            )
        }
    )
    swapped = restoration_frame(40, "noise:30", seed=3, photo_names=TRAIN_PHOTOS, size=32, corrupt="swap")
    run_bounded(s, produce_raw(s, [json.dumps(e).encode() for e in events(swapped, "r3")]))
    Ingestor(s, store).run(until_caught_up=True)
    fourth = retrain(unscreened, MODEL, if_ready=True, feast_store=store)
    assert fourth.status == "rejected", fourth.reasons
    assert any("psnr" in r for r in fourth.reasons), fourth.reasons
