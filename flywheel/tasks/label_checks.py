"""Checks of labels (targets) before training, shared by the task specs' ``screen_labels``.

* Classes: **confident learning** (cleanlab) on two sources of out-of-sample
  probabilities: the champion's (it never saw the new window) and a cross-validated linear
  probe's on the champion's frozen sentence embeddings (each sample judged by a probe that
  did not train on it). A label is flagged when confident learning flags it on *both* and
  both give it less than ``MAX_GIVEN_PROB``: the champion alone flags an honest new domain
  it does not know yet (46 % of a clean airline-tweet window), the probe alone a class it
  learnt poorly. The rule was chosen in ``bench/bench_label_screen.py`` for ≤ 3 % false
  flags on clean windows; a mislabelling the probe can learn (every label rotated) is left
  to the promotion gate.
* Images: **misalignment** of the target against the champion's restoration of the input
  (phase correlation, counted when aligning gains over a dB), **lost sharpness** of the
  target itself (its spectral energy at high frequencies against mid ones: a Gaussian blur
  of 1.5 px cuts it a hundredfold, and it needs no model, whose own residual noise made a
  comparison with the restoration useless), and **distance** from the restoration (PSNR);
  the last two judged against the same figures on the golden set, which is clean.

The generic step (``training.label_screen``) decides what to do with the flags.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from flywheel.blas import one_blas_thread
from flywheel.lazy import lazy_import

_cleanlab_filter = lazy_import("cleanlab.filter")
np = lazy_import("numpy")
_sk_exceptions = lazy_import("sklearn.exceptions")
_sk_linear = lazy_import("sklearn.linear_model")
_sk_selection = lazy_import("sklearn.model_selection")


@dataclass
class LabelFlags:
    """Per row of the screened frame: why its label looks wrong ("" where it does not), and
    what the models would answer instead, as the event contract's ``prediction`` object (or
    None): the review page shows it as the model's answer."""

    reasons: list[str]
    suggested: list[Any] = field(default_factory=list)

    @classmethod
    def none(cls, n: int) -> LabelFlags:
        return cls([""] * n, [None] * n)

    @property
    def flagged(self) -> list[int]:
        return [i for i, r in enumerate(self.reasons) if r]


def cross_validated_probs(features, targets, num_labels: int, folds: int = 5, seed: int = 0):
    """Out-of-sample class probabilities [n, num_labels] from a logistic-regression probe
    fitted ``folds`` times, each sample scored by the probe that left it out; None when a
    class present has fewer than 2 samples (no stratified split exists)."""

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets)
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2 or counts.min() < 2:
        return None
    k = int(min(folds, counts.min()))
    probs = np.zeros((len(y), num_labels))
    with warnings.catch_warnings(), one_blas_thread():
        warnings.simplefilter("ignore", _sk_exceptions.ConvergenceWarning)
        for train, test in _sk_selection.StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
            probe = _sk_linear.LogisticRegression(C=10.0, max_iter=500).fit(x[train], y[train])
            probs[np.ix_(test, probe.classes_)] = probe.predict_proba(x[test])
    return probs


MAX_GIVEN_PROB = 0.15  # a flagged label has less than this probability under every source


def flag_labels(targets, sources: list) -> list[bool]:
    """Labels confident learning flags on every source of probabilities, each of which also
    gives the label less than ``MAX_GIVEN_PROB`` (see the module docstring)."""

    y = np.asarray(targets)
    hits = np.ones(len(y), dtype=bool)
    for probs in sources:
        p = np.asarray(probs)
        hits &= np.array(confident_learning(y, p), dtype=bool)
        hits &= p[np.arange(len(y)), y] < MAX_GIVEN_PROB
    return [bool(v) for v in hits]


def confident_learning(targets, probs) -> list[bool]:
    """Which labels cleanlab's confident learning finds likely wrong (``prune_by_noise_rate``),
    over the classes present (a class absent from the window has no threshold to learn)."""

    y = np.asarray(targets)
    present = np.unique(y)
    if len(present) < 2:
        return [False] * len(y)
    sub = np.asarray(probs, dtype=np.float64)[:, present]
    sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
    remap = {c: i for i, c in enumerate(present)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        issues = _cleanlab_filter.find_label_issues(
            np.array([remap[c] for c in y]), sub, filter_by="prune_by_noise_rate", n_jobs=1
        )
    return [bool(v) for v in issues]


# ---- images ------------------------------------------------------------------------------


def _gray(image):
    """[C, H, W] float tensor → [H, W] numpy luminance."""

    a = np.asarray(image, dtype=np.float64)
    return a.mean(0) if a.ndim == 3 else a


def phase_shift(a, b) -> tuple[int, int]:
    """The integer (dy, dx) that best aligns ``b`` onto ``a`` (phase correlation, windowed)."""

    ga, gb = _gray(a), _gray(b)
    h, w = ga.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    fa = np.fft.fft2((ga - ga.mean()) * window)
    fb = np.fft.fft2((gb - gb.mean()) * window)
    cross = fa * np.conj(fb)
    corr = np.fft.ifft2(cross / np.clip(np.abs(cross), 1e-12, None)).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return (int(dy - h) if dy > h // 2 else int(dy)), (int(dx - w) if dx > w // 2 else int(dx))


@dataclass
class PairCheck:
    """One (restoration, target) pair: the shift that aligns them best, what aligning gains,
    and their PSNR."""

    shift: tuple[int, int]
    aligned_gain_db: float
    psnr_db: float


def psnr_db(a, b, peak: float = 1.0) -> float:
    """PSNR of two same-shaped arrays with pixel values up to ``peak``, capped at 100 dB."""

    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)) / peak**2
    return 100.0 if mse <= 1e-10 else min(100.0, -10.0 * float(np.log10(mse)))


def check_pair(restored, target) -> PairCheck:
    """``restored`` and ``target``: [C, H, W] arrays in [0, 1] of the same shape."""

    a, b = np.asarray(restored, dtype=np.float64), np.asarray(target, dtype=np.float64)
    dy, dx = phase_shift(a, b)
    gain = 0.0
    h, w = a.shape[-2:]
    if (dy, dx) != (0, 0) and abs(dy) < h // 2 and abs(dx) < w // 2:
        # the overlap of a and b moved by (dy, dx), against the same region unmoved
        ya, yb = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
        xa, xb = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
        gain = psnr_db(a[..., ya, xa], b[..., yb, xb]) - psnr_db(a[..., ya, xa], b[..., ya, xa])
    return PairCheck((dy, dx), gain, psnr_db(a, b))


def sharpness(image) -> float:
    """log10 of the mean spectral power at high frequencies (0.25-0.5 cycles/px) over that at
    mid ones (0.05-0.15), of the windowed luminance: natural photos sit around -1.5, a 1.5 px
    Gaussian blur takes them to about -4. A small floor keeps flat patches from dividing by 0."""

    g = _gray(image)
    g = g - g.mean()
    h, w = g.shape
    power = np.abs(np.fft.fft2(g * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    radius = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    high = power[(radius >= 0.25) & (radius <= 0.5)].mean()
    mid = power[(radius >= 0.05) & (radius < 0.15)].mean()
    floor = 1e-8  # only an exactly flat patch comes near it: uint8 rounding alone gives ~1e-4
    return float(np.log10((high + floor) / (mid + floor)))
