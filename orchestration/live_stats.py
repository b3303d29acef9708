"""Is the new champion worse on live traffic than the one it replaced? The monitor's test.

The two versions answered *different* requests (one before the switch, one after), so the
comparison is of two independent samples, not paired like the gate's:

- a 0/1 metric (accuracy: was the prediction the verified label): the difference of two
  proportions with Newcombe's hybrid score interval (Wilson intervals of each proportion,
  combined; Newcombe 1998, method 10), which keeps its coverage near 0 and 1 where the
  Wald interval does not;
- a continuous metric (PSNR dB of the prediction against the target): Welch's t interval of
  the difference of means (unequal variances, Welch-Satterthwaite degrees of freedom).

``compare`` answers with one-sided ``confidence``: the new version is *worse* when the upper
bound of (new - old) is below -``tolerance``, i.e. the data show a drop beyond the
tolerance. The p-value of that one-sided test (H0: drop ≤ tolerance) is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist

from flywheel.lazy import lazy_import

stats = lazy_import("scipy.stats")  # the t tests only; `flywheel status` imports this module for wilson


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence)


def wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion, each side at one-sided ``confidence``."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower = 0.0 if successes <= 0 else max(0.0, centre - half)
    upper = 1.0 if successes >= n else min(1.0, centre + half)
    return lower, upper


def newcombe(k1: int, n1: int, k2: int, n2: int, confidence: float) -> tuple[float, float]:
    """One-sided bounds of p1 - p2 at ``confidence`` (Newcombe's hybrid score interval)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _smallest_level(rejects, above_half: float) -> float:
    """A p-value: 1 - the largest one-sided confidence at which ``rejects(confidence)`` holds
    (monotone: a wider interval rejects less), by bisection on [0.5, 1). When even the point
    estimate does not reject (p >= 0.5), ``above_half`` is returned (a normal approximation)."""
    lo, hi = 0.5, 1 - 1e-12
    if not rejects(lo):
        return max(0.5, above_half)
    if rejects(hi):
        return 1e-12
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejects(mid) else (lo, mid)
    return 1 - lo


@dataclass(frozen=True)
class LiveComparison:
    """The evidence of one monitor verdict (kept in the history with an automatic rollback)."""

    metric: str
    test: str
    n_new: int
    n_old: int
    mean_new: float
    mean_old: float
    difference: float  # new - old (negative: the new version is worse)
    lower: float  # one-sided bounds of the difference at ``confidence``
    upper: float
    interval_new: tuple[float, float]  # each version's own interval (two-sided at 2·confidence - 1)
    interval_old: tuple[float, float]
    tolerance: float
    confidence: float
    p_value: float  # of H0 "the drop is within tolerance"
    worse: bool  # the data show a drop beyond tolerance at this confidence
    direction: str = "max"  # "min": a lower value is better (the bounds then are of old - new)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, unit: str = "") -> str:
        verdict = "WORSE" if self.worse else "not shown worse"
        better = "higher" if self.direction == "max" else "lower"
        return (
            f"{verdict}: live {self.metric} {self.mean_new:.4g}{unit} (n={self.n_new}) vs "
            f"{self.mean_old:.4g}{unit} (n={self.n_old}); difference {self.difference:+.4g}{unit} "
            f"({better} is better), {self.confidence:.0%} upper bound of the gain {self.upper:+.4g}{unit} "
            f"vs tolerance -{self.tolerance:g}{unit} "
            f"({self.test}, p={self.p_value:.3g})"
        )


def _flipped(flip, interval: tuple[float, float]) -> tuple[float, float]:
    lo, hi = sorted((flip(interval[0]), flip(interval[1])))
    return lo, hi


def compare(
    metric: str,
    new: Sequence[float],
    old: Sequence[float],
    tolerance: float,
    confidence: float = 0.95,
    binary: bool | None = None,
    direction: str = "max",
) -> LiveComparison:
    """New against old (see the module docstring); ``binary`` defaults to "every value is 0 or 1".
    ``direction="min"`` (a lower value is better, an error): the test runs on the gain
    old - new, so *worse* still means "the data show a loss beyond tolerance"; the means and
    the difference (new - old) are reported as measured."""
    if not new or not old:
        raise ValueError(f"comparing needs values of both versions (new {len(new)}, old {len(old)})")
    if binary is None:
        binary = all(v in (0.0, 1.0) for v in new) and all(v in (0.0, 1.0) for v in old)
    if direction == "min":
        flip = (lambda v: 1.0 - v) if binary else (lambda v: -v)
        gained = compare(
            metric, [flip(v) for v in new], [flip(v) for v in old], tolerance, confidence, binary
        )
        return replace(
            gained,
            mean_new=flip(gained.mean_new),
            mean_old=flip(gained.mean_old),
            difference=-gained.difference,
            interval_new=_flipped(flip, gained.interval_new),
            interval_old=_flipped(flip, gained.interval_old),
            direction="min",
        )
    if direction != "max":
        raise ValueError(f"direction is 'max' or 'min', not {direction!r}")
    n1, n2 = len(new), len(old)
    m1, m2 = sum(new) / n1, sum(old) / n2
    diff = m1 - m2
    if binary:
        k1, k2 = round(m1 * n1), round(m2 * n2)
        lower, upper = newcombe(k1, n1, k2, n2, confidence)
        l1, u1 = wilson(k1, n1, confidence)
        l2, u2 = wilson(k2, n2, confidence)
        # the p-value of the same interval: the smallest one-sided level at which it excludes -tolerance
        se = math.sqrt(m1 * (1 - m1) / n1 + m2 * (1 - m2) / n2)
        wald = NormalDist().cdf((diff + tolerance) / se) if se > 0 else 1.0
        p = _smallest_level(lambda c: newcombe(k1, n1, k2, n2, c)[1] < -tolerance, wald)
        return LiveComparison(
            metric, "Newcombe hybrid score interval", n1, n2, m1, m2, diff, lower, upper,
            (l1, u1), (l2, u2), tolerance, confidence, p, upper < -tolerance,
        )  # fmt: skip

    v1 = sum((v - m1) ** 2 for v in new) / (n1 - 1) if n1 > 1 else 0.0
    v2 = sum((v - m2) ** 2 for v in old) / (n2 - 1) if n2 > 1 else 0.0
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0:
        df = float(max(n1 + n2 - 2, 1))
    else:
        den = (v1 / n1) ** 2 / max(n1 - 1, 1) + (v2 / n2) ** 2 / max(n2 - 1, 1)
        df = (v1 / n1 + v2 / n2) ** 2 / den if den > 0 else float(n1 + n2 - 2)
    t = float(stats.t.ppf(confidence, df))
    lower, upper = diff - t * se, diff + t * se

    def own(m: float, v: float, n: int) -> tuple[float, float]:
        half = float(stats.t.ppf(confidence, max(n - 1, 1))) * math.sqrt(v / n)
        return m - half, m + half

    # H0: new - old >= -tolerance. With no variance at all the data decide it exactly.
    p = float(stats.t.cdf((diff + tolerance) / se, df)) if se > 0 else float(diff + tolerance >= 0)
    return LiveComparison(
        metric, "Welch t interval", n1, n2, m1, m2, diff, lower, upper,
        own(m1, v1, n1), own(m2, v2, n2), tolerance, confidence, p, upper < -tolerance,
    )  # fmt: skip
