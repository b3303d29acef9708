"""The promotion gate: pure decisions over an evaluation report (no MLflow here).

Champion and candidate are scored on the same holdout samples, so each guard compares them
pair by pair (``orchestration.paired``): it fails when the data show, at the configured
one-sided confidence, that the candidate is worse than the champion by more than the guard's
tolerance. Every check carries its estimate, confidence bound, sample count and whether the
holdout is large enough for the drop the guard should catch; a holdout too small is named in
the verdict's notes. A report without per-sample scores (written before them) is judged on
point estimates, as it was then.

A first version (no champion) is judged against the configured floors and, by default,
against the baseline (the linear probe fitted on the same training data): a version that
learned less than the probe is rejected.

The ratchet: comparing with the champion alone lets small losses add up (ten candidates
each a little worse than the one before, each within tolerance). So every later candidate
is also judged against a *reference*, the best golden score among all versions promoted so
far (or a pinned ``promotion.reference_version``), with a cumulative budget
(``promotion.ratchet_budget``; text 1 accuracy point, images 0.3 dB): once the candidate
would sit more than the budget below the reference, it is rejected, whatever the champion.
The golden set is fixed per model, so scores taken at different times are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel.settings import Guard, PromotionRules
from flywheel.tasks import spec_class
from orchestration.paired import paired_drop
from training.evaluate import EvalReport


@dataclass(frozen=True)
class Reference:
    """The ratchet's reference: a promoted version and its golden score (primary metric)."""

    version: int
    value: float
    pinned: bool = False


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed (empty when it passed)
    checks: list[dict] = field(default_factory=list)  # every check, passed or not
    notes: list[str] = field(default_factory=list)  # caveats: underpowered holdouts
    stale: bool = False  # judged against a champion that has moved since: not judged at all

    @property
    def explanation(self) -> list[str]:
        """Why it failed or, when it passed, what each check found."""
        return self.reasons or [c["reason"] for c in self.checks]

    @property
    def label(self) -> str:
        return "promoted" if self.passed else "stale" if self.stale else "rejected"


# ---- what applies to a model: the settings, else the task spec's defaults ------------------


def guards_for(rules: PromotionRules, model: str, task: str) -> list[Guard]:
    """Per model, else per task as configured, else the task spec's defaults."""
    if model in rules.guards_per_model:
        return rules.guards_per_model[model]
    if task in rules.guards:
        return rules.guards[task]
    return spec_class(task).default_guards()


def floors_for(rules: PromotionRules, task: str) -> dict[str, float]:
    return rules.floors[task] if task in rules.floors else spec_class(task).default_floors()


def baseline_gain_for(rules: PromotionRules, task: str) -> float | None:
    """How much a first version must beat the baseline by (its mean), if anything."""
    if task in rules.baseline.min_gain:
        return rules.baseline.min_gain[task]
    return spec_class(task).default_baseline_gain()


def ratchet_budget_for(rules: PromotionRules, task: str) -> float | None:
    if task in rules.ratchet_budget:
        return rules.ratchet_budget[task]
    return spec_class(task).default_ratchet_budget()


def check_guard(
    report: EvalReport, guard: Guard, confidence: float = 0.95, against: str = "champion"
) -> dict:
    """One guard: the candidate against ``against`` (champion or baseline) on ``guard.holdout``."""
    name = f"{guard.holdout}.{guard.metric}"
    if against != "champion":
        name = f"{name} vs {against}"
    ref = report.value(guard.holdout, against, guard.metric)
    cand = report.value(guard.holdout, "candidate", guard.metric)
    if cand is None:
        return {"guard": name, "passed": False, "reason": f"{name}: the candidate has no value"}
    if ref is None:
        return {"guard": name, "passed": True, "reason": f"{name}: no {against} value to compare"}
    scale = abs(ref) if guard.relative else 1.0
    tolerance, detect = guard.tolerance * scale, guard.detect_drop * scale
    sign = 1.0 if guard.direction == "max" else -1.0
    tol = f"{guard.tolerance:.0%} relative" if guard.relative else f"{guard.tolerance:g}"
    check = {"guard": name, against: ref, "candidate": cand, "tolerance": tolerance}
    a = report.scores(guard.holdout, against, guard.metric)
    b = report.scores(guard.holdout, "candidate", guard.metric)
    if a is None or b is None or len(a) != len(b) or not a:
        drop = sign * (ref - cand)
        ok = drop <= tolerance + 1e-12
        reason = (
            f"{name} {cand:.4f} vs {against} {ref:.4f} ({-drop:+.4f}; allowed drop {tol}; "
            "point estimates, no per-sample scores)"
        )
        return {**check, "passed": ok, "drop": drop, "method": "point", "reason": reason}
    # The sd a true drop of ``detect`` brings at least: about sqrt(detect) for a 0/1 metric
    # (accuracy), half the drop for a continuous relative one (PSNR, in its units).
    sd_floor = detect / 2 if guard.relative else max(0.25, detect**0.5)
    result = paired_drop(
        [sign * x for x in a], [sign * x for x in b], tolerance, confidence, detect, sd_floor
    )
    # Power matters for a pass (it may be a miss); a failure is conclusive at any size.
    underpowered = result.underpowered and not result.failed
    reason = (
        f"{name} {cand:.4f} vs {against} {ref:.4f}: drop {result.drop:+.4f}, {confidence:.0%} lower bound "
        f"{result.lower_bound:+.4f} vs allowed {tol}, n={result.n}"
        + (f" (too small to catch a {detect:.3g} drop; needs {result.min_samples})" if underpowered else "")
    )
    return {
        **check,
        "passed": not result.failed,
        "method": "paired bootstrap",
        "drop": result.drop,
        "lower_bound": result.lower_bound,
        "n": result.n,
        "min_samples": result.min_samples,
        "detect": detect,
        "underpowered": underpowered,
        "reason": reason,
    }


def _floors(report: EvalReport, rules: PromotionRules, task: str) -> list[dict]:
    checks = []
    spec = spec_class(task)
    for key, floor in floors_for(rules, task).items():
        holdout, metric = key.split(".", 1)
        value = report.value(holdout, "candidate", metric)
        lower_is_better = metric == spec.primary_metric and spec.primary_direction == "min"
        ok = value is not None and (value <= floor if lower_is_better else value >= floor)
        shown = "missing" if value is None else f"{value:.4f}"
        bound = "ceiling" if lower_is_better else "floor"
        checks.append(
            {"guard": key, "passed": ok, "candidate": value, "reason": f"{key} {shown} vs {bound} {floor}"}
        )
    return checks


def _baseline_gain(report: EvalReport, holdout: str, gain: float, direction: str = "max") -> dict:
    """A first version must beat the baseline's mean by ``gain`` (e.g. an image model must
    restore: beat the degraded input's PSNR by a margin)."""
    name = f"{holdout}.{report.metric} gain over baseline"
    base = report.value(holdout, "baseline")
    cand = report.value(holdout, "candidate")
    if base is None or cand is None:
        return {"guard": name, "passed": False, "reason": f"{name}: no baseline or candidate value"}
    better_by = cand - base if direction == "max" else base - cand
    ok = better_by >= gain
    reason = f"{name}: {cand:.4f} vs baseline {base:.4f} ({better_by:+.4f}; needs at least +{gain:g})"
    return {"guard": name, "passed": ok, "baseline": base, "candidate": cand, "reason": reason}


def ratchet_check(report: EvalReport, reference: Reference, budget: float, direction: str = "max") -> dict:
    """The candidate's golden score against the reference, with the cumulative budget."""
    metric = report.metric
    name = f"golden.{metric} vs reference v{reference.version}"
    cand = report.value("golden", "candidate", metric)
    if cand is None:
        return {"guard": name, "passed": False, "reason": f"{name}: the candidate has no value"}
    sign = 1.0 if direction == "max" else -1.0
    used = sign * (reference.value - cand)  # how far below the reference (negative: above it)
    left = budget - used
    kind = "pinned reference" if reference.pinned else "best promoted"
    reason = f"{name} ({kind}): {cand:.4f} vs {reference.value:.4f}; budget {budget:g} in all, " + (
        f"{left:.4f} left" if left >= -1e-12 else f"exceeded by {-left:.4f}"
    )
    return {
        "guard": name,
        "passed": left >= -1e-12,
        "reference": reference.value,
        "reference_version": reference.version,
        "candidate": cand,
        "budget": budget,
        "budget_left": left,
        "method": "ratchet",
        "reason": reason,
    }


def decide(
    report: EvalReport,
    rules: PromotionRules,
    model: str,
    task: str,
    first: bool,
    reference: Reference | None = None,
) -> Verdict:
    """The verdict for a candidate's evaluation report (``reference``: the ratchet's)."""
    checks = _floors(report, rules, task) if first else []
    if not first:
        checks += [check_guard(report, g, rules.confidence) for g in guards_for(rules, model, task)]
        budget = ratchet_budget_for(rules, task)
        if reference is not None and budget is not None:
            direction = spec_class(task).primary_direction
            checks.append(ratchet_check(report, reference, budget, direction))
    b = rules.baseline
    if b.first_version if first else b.later_versions:
        guard = spec_class(task).baseline_guard(b, report.metric)
        check = check_guard(report, guard, rules.confidence, against="baseline")
        if "baseline" in check:  # a report without a baseline (an old one) is not judged on it
            checks.append(check)
    gain = baseline_gain_for(rules, task) if first else None
    if gain is not None:
        checks.append(_baseline_gain(report, b.holdout, gain, spec_class(task).primary_direction))
    reasons = [c["reason"] for c in checks if not c["passed"]]
    notes = [c["reason"] for c in checks if c.get("underpowered")]
    return Verdict(not reasons, reasons, checks, notes)
