"""The monitor's statistics: intervals that cover, and verdicts only when the data show a drop."""

from __future__ import annotations

import random

import pytest

from orchestration.live_stats import compare, wilson


def test_wilson_interval_contains_the_proportion_and_stays_in_0_1():
    assert wilson(0, 50, 0.95)[0] == 0.0 and 0 < wilson(0, 50, 0.95)[1] < 0.1
    assert wilson(50, 50, 0.95)[1] == 1.0 and 0.9 < wilson(50, 50, 0.95)[0] < 1
    lo, hi = wilson(70, 100, 0.95)
    assert lo < 0.7 < hi and hi - lo < 0.2


def test_a_clear_accuracy_drop_is_worse_and_a_tie_is_not():
    old = [1.0] * 700 + [0.0] * 300
    worse = compare("accuracy", [1.0] * 600 + [0.0] * 400, old, tolerance=0.02)
    assert worse.worse and worse.difference == pytest.approx(-0.1) and worse.upper < -0.02
    assert worse.test.startswith("Newcombe") and worse.p_value < 0.05
    same = compare("accuracy", [1.0] * 695 + [0.0] * 305, old, tolerance=0.02)
    assert not same.worse and same.p_value > 0.05


def test_a_drop_within_tolerance_or_from_too_few_samples_is_not_worse():
    assert not compare("accuracy", [1.0] * 69 + [0.0] * 31, [1.0] * 7 + [0.0] * 3, tolerance=0.02).worse
    small = compare("accuracy", [1.0] * 6 + [0.0] * 4, [1.0] * 7 + [0.0] * 3, tolerance=0.0)
    assert not small.worse and small.upper > 0


def test_psnr_uses_welch_and_tolerance_in_db():
    rng = random.Random(0)
    old = [rng.gauss(30.0, 2.0) for _ in range(300)]
    down = [rng.gauss(28.5, 3.0) for _ in range(300)]
    verdict = compare("psnr", down, old, tolerance=0.5)
    assert verdict.test.startswith("Welch") and verdict.worse
    assert not compare("psnr", down, old, tolerance=2.5).worse  # a 1.5 dB drop is within 2.5 dB


def test_false_alarm_rate_is_near_the_confidence_level():
    """Two versions equally good: the one-sided 95 % test at tolerance 0 says 'worse' ~5 % of the time."""
    rng = random.Random(1)
    alarms = 0
    for _ in range(400):
        a = [float(rng.random() < 0.7) for _ in range(300)]
        b = [float(rng.random() < 0.7) for _ in range(300)]
        alarms += compare("accuracy", a, b, tolerance=0.0).worse
    assert alarms / 400 < 0.09


def test_compare_needs_both_versions():
    with pytest.raises(ValueError, match="both versions"):
        compare("accuracy", [], [1.0], tolerance=0.0)


def test_an_error_metric_is_worse_when_it_rises_not_when_it_falls():
    rng = random.Random(2)
    old = [abs(rng.gauss(1.0, 0.3)) for _ in range(300)]
    up = [abs(rng.gauss(1.4, 0.3)) for _ in range(300)]
    down = [abs(rng.gauss(0.6, 0.3)) for _ in range(300)]
    rising = compare("mae", up, old, tolerance=0.05, direction="min")
    assert rising.worse and rising.difference > 0 and rising.mean_new > rising.mean_old
    assert rising.interval_new[0] < rising.mean_new < rising.interval_new[1]
    assert "lower is better" in rising.describe()
    assert not compare("mae", down, old, tolerance=0.05, direction="min").worse
    assert compare("mae", down, old, tolerance=0.05).worse  # read as "higher is better" it would roll back
    errors = compare("error", [1.0] * 400 + [0.0] * 600, [1.0] * 300 + [0.0] * 700, 0.02, direction="min")
    assert errors.worse and errors.test.startswith("Newcombe") and errors.mean_new == pytest.approx(0.4)
    with pytest.raises(ValueError, match="direction"):
        compare("mae", up, old, tolerance=0.0, direction="down")
