"""The label screen's checks (pure logic on arrays) and its report."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.tasks.label_checks import (
    check_pair,
    confident_learning,
    cross_validated_probs,
    phase_shift,
    sharpness,
)
from training.screen_report import LabelScreenReport, kind_of


def texture(seed: int = 0, size: int = 48) -> np.ndarray:
    """A [3, H, W] image in [0, 1] with detail at every scale (smoothed noise)."""
    rng = np.random.default_rng(seed)
    base = rng.random((size + 8, size + 8))
    smooth = (base[:-2, :-2] + base[1:-1, 1:-1] + base[2:, 2:]) / 3
    return np.repeat(smooth[None, : size + 4, : size + 4], 3, axis=0)


def crop(image: np.ndarray, dy: int = 0, dx: int = 0, size: int = 48) -> np.ndarray:
    return image[:, 2 + dy : 2 + dy + size, 2 + dx : 2 + dx + size]


def blur(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    for _ in range(3):
        out[:, 1:-1, 1:-1] = (
            out[:, :-2, 1:-1] + out[:, 2:, 1:-1] + out[:, 1:-1, :-2] + out[:, 1:-1, 2:] + out[:, 1:-1, 1:-1]
        ) / 5
    return out


@pytest.mark.parametrize(("dy", "dx"), [(0, 0), (2, 0), (0, -2), (2, 2), (-1, 2)])
def test_phase_correlation_finds_the_shift_of_the_target(dy, dx):
    image = texture()
    assert phase_shift(crop(image), crop(image, dy, dx)) == (dy, dx)  # a(x) ≈ b(x - shift)


def test_a_shifted_target_gains_when_aligned_a_blurred_one_lacks_fine_detail_a_good_one_neither():
    image = texture(1)
    restored = crop(image)
    good = check_pair(restored, crop(image))
    assert good.shift == (0, 0) and good.aligned_gain_db == 0 and good.psnr_db == 100
    shifted = check_pair(restored, crop(image, 2, 1))
    assert shifted.shift != (0, 0) and shifted.aligned_gain_db > 10
    blurred = check_pair(restored, crop(blur(image)))
    assert blurred.aligned_gain_db < 1 and blurred.psnr_db < good.psnr_db  # no shift worth aligning
    assert sharpness(crop(blur(image))) < sharpness(crop(image)) - 1  # ten times less fine detail
    assert sharpness(np.zeros((3, 48, 48))) == 0.0  # a flat patch: no division by zero


def test_confident_learning_finds_flipped_labels_and_leaves_clean_ones():
    rng = np.random.default_rng(0)
    n, k = 600, 3
    truth = rng.integers(0, k, n)
    probs = np.full((n, k), 0.1)
    probs[np.arange(n), truth] = 0.8
    probs += rng.random((n, k)) * 0.05
    given = truth.copy()
    flipped = rng.random(n) < 0.2
    given[flipped] = (truth[flipped] + rng.integers(1, k, flipped.sum())) % k
    found = np.array(confident_learning(given, probs))
    assert (found & flipped).sum() / flipped.sum() > 0.9
    assert (found & ~flipped).sum() / (~flipped).sum() < 0.03
    assert not any(confident_learning(truth, probs))  # clean labels: nothing flagged


def test_confident_learning_with_a_class_absent_from_the_window_and_a_single_class():
    probs = np.array([[0.9, 0.05, 0.05]] * 10 + [[0.05, 0.9, 0.05]] * 10)
    given = np.array([0] * 10 + [1] * 9 + [0])  # class 2 absent; one label wrong
    found = confident_learning(given, probs)
    assert found[-1] and sum(found) == 1
    assert confident_learning(np.zeros(5, dtype=int), probs[:5]) == [False] * 5


def test_a_label_is_flagged_only_when_every_source_disputes_it():
    from flywheel.tasks.label_checks import flag_labels

    rng = np.random.default_rng(1)
    n = 300
    truth = rng.integers(0, 3, n)
    sure = np.full((n, 3), 0.02)
    sure[np.arange(n), truth] = 0.96
    given = truth.copy()
    given[:30] = (truth[:30] + 1) % 3  # 10 % wrong
    both = np.array(flag_labels(given, [sure, sure]))
    assert both[:30].all() and not both[30:].any()
    lukewarm = sure.copy()
    lukewarm[np.arange(30), given[:30]] = 0.3  # the second source gives the label 0.3: not flagged
    assert not any(flag_labels(given, [sure, lukewarm / lukewarm.sum(1, keepdims=True)])[:30])


def test_the_probe_needs_two_samples_of_every_class_present():
    x = np.random.default_rng(0).random((7, 4))
    assert cross_validated_probs(x, np.array([0, 0, 0, 1, 1, 1, 2]), 3) is None
    probs = cross_validated_probs(x[:6], np.array([0, 0, 0, 1, 1, 1]), 3)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1) and (probs[:, 2] == 0).all()


def test_the_report_refuses_above_the_share_and_names_the_kinds():
    r = LabelScreenReport(screened=100, flagged=16, max_share=0.15, by_reason={"target blurred": 16})
    assert r.suspect and r.reason().startswith("labels_suspect: 16 of 100 labels flagged (16 % > 15 %")
    assert not LabelScreenReport(screened=100, flagged=15, max_share=0.15).suspect
    assert not LabelScreenReport(screened=0, flagged=0).suspect
    assert LabelScreenReport.from_dict(r.to_dict()) == r
    disputed = "label disputed: 'neutral' given; the champion and a probe say 'positive' (0.81 against 0.10)"
    assert kind_of(disputed) == "label disputed"
    assert (
        kind_of("target shifted by +4,+0 px against the input (+6.1 dB once aligned)") == "target shifted by"
    )
    assert kind_of("target blurred: 20 % of the restoration's detail") == "target blurred"


def test_flagged_samples_become_valid_review_events_with_the_suggestion_or_the_given_target(tmp_path):
    import base64

    import pandas as pd

    from flywheel.events import validate_event
    from flywheel.images import open_image_store, png_b64
    from flywheel.tasks.image import ImageRestoration
    from flywheel.tasks.text import TextClassification

    row = pd.Series({"sample_id": "fb-1", "text": "the flight was late", "label": "positive"})
    event = validate_event(
        TextClassification().flagged_event(row, "m", {"label": "negative", "confidence": 0.8})
    )
    assert event.event_id == "fb-1" and event.prediction.label == "negative" and event.feedback is None

    store = open_image_store(f"file://{tmp_path}")
    given = png_b64(np.full((32, 32, 3), 200, dtype=np.uint8))
    uri = store.put(base64.b64decode(given))
    row = pd.Series({"sample_id": "p-1", "input_uri": uri, "target_uri": uri})
    event = validate_event(ImageRestoration(store=store).flagged_event(row, "m", None))
    assert event.event_id == "p-1" and event.prediction.image_png_b64 == given  # accept = the target is right
