"""The image-restoration task spec on a tiny network: samples into the image store, the data
gate, fit → save → load, serving PNGs, the review grid, and broken images sent to the DLQ."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from flywheel.errors import DataError
from flywheel.images import decode_png_b64, png_b64
from flywheel.settings import DataGateSettings, load_settings
from flywheel.tasks import spec_for
from training.image_corpus import TRAIN_PHOTOS, restoration_frame


@pytest.fixture
def spec(tmp_path):
    from flywheel.tasks.image.network import RestorationNetConfig

    settings = load_settings(
        state_dir=tmp_path / "state", images={"net": RestorationNetConfig.tiny().to_dict(), "patch": 32}
    )
    return spec_for(settings, "image-restoration")


def pairs(n: int, degradation: str = "noise:25", seed: int = 0) -> pd.DataFrame:
    return restoration_frame(n, degradation, seed, photo_names=TRAIN_PHOTOS, size=32)


def test_samples_from_base64_or_paths_land_in_the_image_store_by_hash(spec, tmp_path):
    frame = pairs(3)
    samples = spec.load_samples(frame)
    assert list(samples.columns) == ["sample_id", *spec.sample_columns]
    assert (samples["width"] == 32).all() and samples["input_uri"].str.endswith(".png").all()
    again = spec.load_samples(frame)
    assert list(again["input_uri"]) == list(samples["input_uri"])  # content-addressed: same URIs
    # The same pairs as files next to a JSONL file of relative paths.
    lines = []
    for i, row in enumerate(frame.itertuples()):
        for side, text in (("in", row.input_png_b64), ("out", row.target_png_b64)):
            (tmp_path / f"{side}{i}.png").write_bytes(base64.b64decode(text))
        lines.append(
            json.dumps({"sample_id": row.sample_id, "input_path": f"in{i}.png", "target_path": f"out{i}.png"})
        )
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    from_files = spec.load_samples(tmp_path / "pairs.jsonl")
    assert list(from_files["target_uri"]) == list(samples["target_uri"])


def test_a_bootstrap_file_with_broken_pairs_is_refused_naming_the_lines(spec, tmp_path):
    frame = pairs(2)
    rows = frame.to_dict("records")
    rows[0]["target_png_b64"] = png_b64(np.zeros((32, 40, 3), np.uint8))  # another size
    rows[1]["input_png_b64"] = base64.b64encode(b"GIF89a").decode()
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"2 of 2 image pairs cannot be used: line 1 .*the same size.*line 2"):
        spec.load_samples(tmp_path / "bad.jsonl")


def test_the_data_gate_quarantines_missing_tampered_and_too_small_images(spec):
    from training.data_gate import check_batch

    samples = spec.load_samples(pairs(6)).assign(confidence=1.0)
    samples.loc[0, "target_uri"] = None
    samples.loc[1, "input_sha256"] = "0" * 64  # the URI no longer names its content
    samples.loc[2, "width"] = 12
    clean, report = check_batch(samples, [], DataGateSettings(), spec)
    assert len(clean) == 3 and report.success, report.text()
    assert report.quarantine.by_reason == {
        "target image missing": 1,
        "input image URI does not match its sha256": 1,
        "image side under 16 px": 1,
    }


def test_a_dataset_of_small_images_is_cropped_to_its_smallest_side(spec):
    small = spec.load_samples(restoration_frame(3, "noise:25", 0, photo_names=TRAIN_PHOTOS, size=24))
    data = spec.dataset(small, [])
    assert data[0]["pixel_values"].shape == (3, 24, 24) and data[2]["target"].shape == (3, 24, 24)


def test_fit_lowers_the_loss_saves_and_reloads_identical_outputs_and_serves_pngs(spec, tmp_path):
    import torch

    from flywheel.tasks.base import predict
    from training.evaluate import evaluate
    from training.trainer import fit, load_adapter_model, version_roles

    train = spec.load_samples(pairs(32)).assign(confidence=1.0)
    val = spec.load_samples(pairs(8, seed=3)).assign(confidence=1.0)
    cfg = load_settings(
        training={"epochs": 3, "min_steps": 24, "batch_size": 8, "learning_rate": 3e-3}
    ).training
    result = fit(spec, [], train, val, cfg, tmp_path / "v1", progress=False)
    losses = [h["train_loss"] for h in result.history if h["epoch"] > 0]
    assert losses[-1] < losses[0], losses
    assert (tmp_path / "v1" / "adapter_net.json").is_file()
    data = spec.dataset(val, [])
    a = predict(spec, load_adapter_model(spec, [], tmp_path / "v1"), data)
    b = predict(spec, load_adapter_model(spec, [], tmp_path / "v1"), data)
    assert torch.equal(a, b)

    report = evaluate(spec, [], version_roles(spec, [], tmp_path / "v1"), {"golden": val})
    assert report.metric == "psnr" and len(report.scores("golden", "candidate")) == 8
    assert report.value("golden", "candidate") > report.value("golden", "baseline")  # beats the input
    assert 0 < report.value("golden", "candidate", "ssim") <= 1

    model = load_adapter_model(spec, [], tmp_path / "v1")
    odd = png_b64(np.full((20, 36, 3), 128, np.uint8))  # any size within the limits is served
    served = spec.serve(model, pd.DataFrame({"image_png_b64": [pairs(1).input_png_b64[0], odd]}), [])
    assert [decode_png_b64(x).shape for x in served["image_png_b64"]] == [(32, 32, 3), (20, 36, 3)]

    files = spec.review_artifacts(report, {"candidate": model, "champion": None}, val, tmp_path)
    assert [f.name for f in files] == ["grid_golden.png"] and files[0].stat().st_size > 1000


def test_broken_images_go_to_the_dead_letter_topic_with_the_reason():
    from pipelines.dlq import DlqRecord
    from pipelines.records import DLQ, Origin
    from pipelines.transform import process_raw
    from training.image_corpus import feedback_events

    good = feedback_events(pairs(1), "den")[0]
    png = base64.b64decode(good["input"]["image_png_b64"])
    cases = {
        "not a PNG": ("input", "image_png_b64", base64.b64encode(b"GIF89a....").decode()),
        "cannot be decoded": ("input", "image_png_b64", base64.b64encode(png[: len(png) // 2]).decode()),
        "the input's size": ("feedback", "target_png_b64", png_b64(np.zeros((32, 40, 3), np.uint8))),
        "600": ("input", "image_png_b64", png_b64(np.zeros((8, 600, 3), np.uint8))),
    }
    for why, (part, field, value) in cases.items():
        event = json.loads(json.dumps(good))
        event[part][field] = value
        out = process_raw(json.dumps(event).encode(), None, Origin("t.raw", 0, 1))
        assert out.destination == DLQ, why
        record = DlqRecord.from_json(out.record)
        text = " ".join([record.message, *(m for _, m in record.problems)])
        assert why in text, (why, text)


def test_the_ingestor_refuses_a_clean_record_with_an_unusable_image_before_storing_anything(tmp_path):
    """A record put on the clean topic by anything but the stream job: its image is checked
    again, so a bomb or broken bytes stop the ingestor with the reason, nothing half-written."""
    from flywheel.images import LocalImageStore
    from pipelines.ingest import IngestError, sample_row
    from pipelines.records import Origin, RoutedRecord
    from training.image_corpus import feedback_events

    event = feedback_events(pairs(1), "den")[0]
    good = RoutedRecord(event, None, False, 0, Origin("t.raw", 0, 1))
    store = LocalImageStore(tmp_path / "images")
    row = sample_row(good.to_json().encode(), pd.Timestamp.now(tz="UTC"), store)
    assert row["width"] == 32 and store.exists(row["target_uri"])
    bad = json.loads(json.dumps(event))
    bad["feedback"]["target_png_b64"] = png_b64(np.zeros((8, 600, 3), np.uint8))
    broken = RoutedRecord(bad, None, False, 0, Origin("t.raw", 0, 2))
    fresh = LocalImageStore(tmp_path / "fresh")
    with pytest.raises(IngestError, match=r"its target image is unusable: .*600"):
        sample_row(broken.to_json().encode(), pd.Timestamp.now(tz="UTC"), fresh)
    assert not any((tmp_path / "fresh").rglob("*.png"))
