"""Paired statistics for the gate (issue 12): known cases."""

from __future__ import annotations

import math

import pytest

from orchestration.paired import mcnemar_p, min_samples, paired_drop


def _pairs(n: int, both: int, champ_only: int, cand_only: int):
    """0/1 correctness of champion and candidate on n samples with the given overlaps."""
    champion = [1] * both + [1] * champ_only + [0] * cand_only
    candidate = [1] * both + [0] * champ_only + [1] * cand_only
    rest = n - len(champion)
    return champion + [0] * rest, candidate + [0] * rest


def test_identical_predictions_pass():
    champion, candidate = _pairs(400, 300, 0, 0)
    result = paired_drop(champion, candidate, tolerance=0.005)
    assert result.drop == 0 and result.lower_bound == 0 and not result.failed


def test_a_large_significant_drop_fails():
    champion, candidate = _pairs(600, 400, 70, 10)  # 10 points worse, mostly one-way disagreement
    result = paired_drop(champion, candidate, tolerance=0.005)
    assert result.failed and math.isclose(result.drop, 0.1) and result.lower_bound > 0.07
    assert "FAIL" in result.describe()  # significant even where the holdout is small for 2.5 points
    assert mcnemar_p([bool(x) for x in champion], [bool(x) for x in candidate]) < 1e-9


def test_a_small_drop_on_a_tiny_holdout_passes_and_says_it_is_underpowered():
    champion, candidate = _pairs(30, 20, 2, 1)  # 1 sample worse out of 30: 3.3 points
    result = paired_drop(champion, candidate, tolerance=0.005)
    assert not result.failed and result.underpowered
    assert "holdout too small" in result.describe()


def test_verdicts_reproduce_and_the_drop_within_tolerance_passes():
    champion, candidate = _pairs(2000, 1500, 60, 50)  # 0.5 points worse: at the tolerance
    first = paired_drop(champion, candidate, tolerance=0.005)
    assert first == paired_drop(champion, candidate, tolerance=0.005)
    assert not first.failed


def test_mcnemar_and_sample_size_known_values():
    assert mcnemar_p([True] * 10, [False] * 10) == pytest.approx(1 / 1024)
    assert mcnemar_p([True, False], [True, False]) == 1.0
    # (z_.95 + z_.8) * sd / (detect - tolerance), squared: (1.645 + 0.842) * 0.3 / 0.02 -> 1392
    assert min_samples(0.025, 0.005, 0.3) == 1392
    with pytest.raises(ValueError):
        min_samples(0.005, 0.005, 0.3)
