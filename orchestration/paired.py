"""Paired comparison of a candidate with the champion on the same holdout samples.

Champion and candidate are scored on the same samples, so their difference is measured
pair by pair, which removes the between-sample variance a comparison of two point
estimates carries. For a guarded metric (accuracy: a 0/1 per sample; PSNR: dB per image)
``paired_drop`` answers: do the data show, at ``confidence`` (one-sided), that the
candidate is worse than the champion by more than ``tolerance``? It returns the estimate,
the one-sided confidence bound, the sample count and whether the holdout is large enough
to detect the drop the guard is meant to catch (``detect``, with 80 % power: ``min_samples``),
so a verdict on a holdout too small for its guard is reported as such instead of silently
trusted.

The interval is a paired bootstrap over samples (percentile, seeded, so verdicts
reproduce); McNemar's exact test (``mcnemar_p``) is given for 0/1 metrics as a check.

What a holdout of n pairs can detect with 80 % power at 95 % confidence, for accuracy
(per-sample difference sd 0.3, i.e. the two models disagree on ~9 % of samples) and a
tolerance t: a true drop of t + 2.49 * 0.3 / sqrt(n), i.e. t + 0.053 at n=200, t + 0.037
at n=400, t + 0.024 at n=1000 (``detectable_drop``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class PairedDrop:
    """One guard's evidence: drop = champion - candidate (for a metric where higher is better)."""

    n: int
    drop: float  # point estimate of the drop (positive: the candidate is worse)
    lower_bound: float  # one-sided lower confidence bound of the drop
    tolerance: float  # allowed drop, in the metric's units
    confidence: float
    min_samples: int  # samples needed to detect a drop of ``detect`` with DEFAULT_POWER
    detect: float
    failed: bool  # the data show a drop beyond tolerance at this confidence

    @property
    def underpowered(self) -> bool:
        return self.n < self.min_samples

    def describe(self) -> str:
        verdict = "FAIL" if self.failed else "pass"
        power = (
            f"; holdout too small to catch a {self.detect:.4g} drop (n={self.n} < {self.min_samples})"
            if self.underpowered
            else ""
        )
        return (
            f"{verdict}: drop {self.drop:+.4f} (lower {self.confidence:.0%} bound {self.lower_bound:+.4f}) "
            f"vs tolerance {self.tolerance:.4f}, n={self.n}{power}"
        )


def _z(p: float) -> float:
    """The standard normal quantile."""

    return NormalDist().inv_cdf(p)


def min_samples(
    detect: float,
    tolerance: float,
    sd: float,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = DEFAULT_POWER,
) -> int:
    """Pairs needed so a true drop of ``detect`` (> tolerance) fails the guard with ``power``.

    ``sd`` is the standard deviation of the per-sample difference; for a 0/1 metric it is
    about sqrt(discordant share), e.g. 0.3 when the two models disagree on 9 % of samples.
    """
    if detect <= tolerance:
        raise ValueError(f"detect ({detect}) must exceed the tolerance ({tolerance})")
    return math.ceil(((_z(confidence) + _z(power)) * sd / (detect - tolerance)) ** 2)


def detectable_drop(
    n: int, tolerance: float, sd: float, confidence: float = DEFAULT_CONFIDENCE, power: float = DEFAULT_POWER
) -> float:
    """The smallest true drop that ``n`` pairs catch with ``power`` (the inverse of ``min_samples``)."""
    return tolerance + (_z(confidence) + _z(power)) * sd / math.sqrt(max(n, 1))


def paired_drop(
    champion: Sequence[float],
    candidate: Sequence[float],
    tolerance: float,
    confidence: float = DEFAULT_CONFIDENCE,
    detect: float | None = None,
    sd_floor: float = 0.25,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedDrop:
    """Paired bootstrap test of "candidate is worse than champion by more than tolerance".

    ``champion[i]`` and ``candidate[i]`` are the per-sample metric of the same sample
    (higher is better; pass negated values for a lower-is-better metric). ``detect`` (default
    tolerance + 0.045) is the drop the holdout should be large enough to catch; the sd used for
    that is the observed one, at least ``sd_floor`` (in the metric's units).
    """

    a = np.asarray(champion, dtype=float)
    b = np.asarray(candidate, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two equal 1-D arrays, got {a.shape} and {b.shape}")
    n = len(a)
    detect = tolerance + 0.045 if detect is None else detect
    if n == 0:
        return PairedDrop(0, math.nan, math.nan, tolerance, confidence, 1, detect, False)
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lower = float(np.quantile(means, 1 - confidence))
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    needed = min_samples(detect, tolerance, max(sd, sd_floor), confidence)
    return PairedDrop(n, float(diff.mean()), lower, tolerance, confidence, needed, detect, lower > tolerance)


def mcnemar_p(champion_correct: Sequence[bool], candidate_correct: Sequence[bool]) -> float:
    """One-sided exact McNemar p-value for "the candidate is worse" (binomial on discordant pairs)."""
    worse = sum(1 for a, b in zip(champion_correct, candidate_correct, strict=True) if a and not b)
    better = sum(1 for a, b in zip(champion_correct, candidate_correct, strict=True) if b and not a)
    n = worse + better
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(worse, n + 1)) / 2**n
