"""The promotion gate's decisions (pure logic)."""

from __future__ import annotations

from flywheel.settings import Guard, PromotionRules
from orchestration.promotion import decide
from training.evaluate import EvalReport


def as_report(d: dict) -> EvalReport:
    return EvalReport.from_dict({"task": "text-classification", "labels": ["a", "b"], **d})


def report(champ: float, cand: float, old=(0.8, 0.8), metric: str = "accuracy") -> EvalReport:
    return as_report(
        {
            "metric": metric,
            "sets": {
                "golden": {"size": 100, "champion": {metric: champ}, "candidate": {metric: cand}},
                "old": {"size": 100, "champion": {metric: old[0]}, "candidate": {metric: old[1]}},
            },
        }
    )


def test_a_candidate_within_tolerance_passes_and_a_regression_is_rejected_with_reasons():
    rules = PromotionRules()
    assert decide(report(0.80, 0.796), rules, "m", "text-classification", first=False).passed  # -0.4 points
    verdict = decide(report(0.80, 0.79), rules, "m", "text-classification", first=False)  # -1 point
    assert not verdict.passed and verdict.label == "rejected"
    assert verdict.reasons == [
        "golden.accuracy 0.7900 vs champion 0.8000 (-0.0100; allowed drop 0.005; "
        "point estimates, no per-sample scores)"
    ]


def test_forgetting_on_the_old_set_is_guarded():
    verdict = decide(
        report(0.8, 0.85, old=(0.8, 0.7)), PromotionRules(), "m", "text-classification", first=False
    )
    assert not verdict.passed and verdict.reasons[0].startswith("old.accuracy 0.7000")


def test_psnr_is_guarded_in_db_from_measured_noise():
    """Issue 28, item 1: 0.2 dB absolute (the 5 % relative rule allowed 1.5 dB at 30 dB)."""
    rules = PromotionRules()
    ok = report(30.0, 29.85, metric="psnr")  # -0.15 dB
    bad = report(30.0, 29.70, metric="psnr")  # -0.30 dB: within 5 %, now rejected
    assert decide(ok, rules, "m", "image-restoration", first=False).passed
    assert not decide(bad, rules, "m", "image-restoration", first=False).passed


def test_per_model_guards_override_the_task_defaults():
    rules = PromotionRules(guards_per_model={"lenient": [Guard(metric="accuracy", tolerance=0.5)]})
    assert decide(report(0.8, 0.5), rules, "lenient", "text-classification", first=False).passed
    assert not decide(report(0.8, 0.5), rules, "strict", "text-classification", first=False).passed


def paired_report(n: int, champ_only: int, cand_only: int, both: int, baseline_only: int = 0) -> EvalReport:
    """Golden-set correctness per sample: ``both`` right for both, then one-sided disagreements."""
    champion = [1.0] * both + [1.0] * champ_only + [0.0] * cand_only
    candidate = [1.0] * both + [0.0] * champ_only + [1.0] * cand_only
    champion += [0.0] * (n - len(champion))
    candidate += [0.0] * (n - len(candidate))
    baseline = candidate[:]
    for i in range(len(baseline) - baseline_only, len(baseline)):  # right where the candidate is wrong
        baseline[i] = 1.0
    scores = {"champion": champion, "candidate": candidate, "baseline": baseline}
    entry = {role: {"accuracy": sum(v) / n} for role, v in scores.items()}
    entry["per_sample"] = {role: {"accuracy": v} for role, v in scores.items()}
    return as_report({"metric": "accuracy", "sets": {"golden": {"size": n, **entry}}})


def golden_only(**kw) -> PromotionRules:
    return PromotionRules(guards={"text-classification": [Guard(metric="accuracy", holdout="golden", **kw)]})


def test_the_paired_gate_passes_noise_that_a_point_comparison_would_reject():
    # 2 points worse on 400 samples (14 samples lost, 6 won): within the noise of 20 disagreements
    r = paired_report(400, champ_only=14, cand_only=6, both=250)
    verdict = decide(r, golden_only(tolerance=0.005), "m", "text-classification", first=False)
    assert verdict.passed, verdict.reasons
    check = verdict.checks[0]
    assert check["method"] == "paired bootstrap" and check["n"] == 400
    assert check["drop"] > 0.005 > check["lower_bound"]


def test_the_paired_gate_rejects_a_large_significant_drop_with_its_evidence():
    r = paired_report(400, champ_only=40, cand_only=4, both=250)  # 9 points worse
    verdict = decide(r, PromotionRules(), "m", "text-classification", first=False)
    assert not verdict.passed
    check = verdict.checks[0]
    assert check["lower_bound"] > 0.05 and not check["underpowered"]
    assert "golden.accuracy 0.6350 vs champion 0.7250: drop +0.0900, 95% lower bound" in verdict.reasons[0]


def test_identical_predictions_pass_and_a_tiny_holdout_is_reported_as_underpowered():
    same = paired_report(400, 0, 0, 300)
    assert decide(same, golden_only(), "m", "text-classification", first=False).passed
    tiny = paired_report(30, champ_only=2, cand_only=1, both=20)
    verdict = decide(tiny, golden_only(tolerance=0.005, detect=0.05), "m", "text-classification", first=False)
    assert verdict.passed and verdict.checks[0]["underpowered"]
    assert verdict.notes and "too small to catch a 0.05 drop" in verdict.notes[0]


def test_a_first_version_worse_than_the_baseline_is_rejected():
    rules = PromotionRules(floors={"text-classification": {}})
    near = paired_report(400, 0, 0, 300, baseline_only=4)  # 1 point under the probe: within 2
    assert decide(near, rules, "m", "text-classification", first=True).passed
    far = paired_report(400, 0, 0, 200, baseline_only=60)  # 15 points under the probe
    verdict = decide(far, rules, "m", "text-classification", first=True)
    assert not verdict.passed and verdict.reasons[0].startswith("golden.accuracy vs baseline 0.5000")
    off = PromotionRules(floors={"text-classification": {}}, baseline={"first_version": False})
    assert decide(far, off, "m", "text-classification", first=True).passed


def test_a_first_version_is_judged_against_the_floors():
    rules = PromotionRules(floors={"text-classification": {"golden.accuracy": 0.6}})
    assert decide(report(0, 0.65), rules, "m", "text-classification", first=True).passed
    verdict = decide(report(0, 0.55), rules, "m", "text-classification", first=True)
    assert not verdict.passed and "golden.accuracy 0.5500 vs floor 0.6" in verdict.reasons[0]


def test_a_missing_candidate_metric_fails_closed():
    r = report(0.8, 0.8)
    del r.sets["golden"].roles["candidate"]["accuracy"]
    assert not decide(r, PromotionRules(), "m", "text-classification", first=False).passed


def test_the_ratchet_stops_a_walk_downhill_once_the_budget_is_spent():
    """Issue 28, item 2: ten candidates each 0.4 points worse than the one before pass the
    champion guard (0.5 points) one by one; the ratchet judges each against the best
    promoted version with 1 point in all, and rejects the first that would spend more."""
    from orchestration.promotion import Reference

    rules = PromotionRules()
    promoted = {1: 0.900}
    champion, verdicts = 0.900, []
    for step in range(1, 11):
        candidate = round(champion - 0.004, 4)  # 0.4 points below the current champion
        best = max(promoted.items(), key=lambda kv: kv[1])
        verdict = decide(
            report(champion, candidate),
            rules,
            "m",
            "text-classification",
            first=False,
            reference=Reference(*best),
        )
        champion_guard = next(c for c in verdict.checks if c["guard"] == "golden.accuracy")
        assert champion_guard["passed"]  # each step alone is within the champion's tolerance
        verdicts.append(verdict.passed)
        if verdict.passed:
            promoted[step + 1] = candidate
            champion = candidate
    assert verdicts[:2] == [True, True] and not any(verdicts[2:]), verdicts  # 0.8 points used, then no more
    ratchet = next(c for c in verdict.checks if c["method"] == "ratchet")
    assert ratchet["reference_version"] == 1 and ratchet["budget"] == 0.01 and ratchet["budget_left"] < 0
    assert "vs reference v1 (best promoted)" in ratchet["reason"] and "exceeded by" in ratchet["reason"]


def test_the_ratchet_budget_is_per_task_and_a_pinned_reference_is_named():
    from orchestration.promotion import Reference

    psnr = decide(
        report(29.45, 29.30, metric="psnr"),
        PromotionRules(),
        "m",
        "image-restoration",
        first=False,
        reference=Reference(3, 29.70, pinned=True),
    )
    ratchet = next(c for c in psnr.checks if c["method"] == "ratchet")
    assert ratchet["budget"] == 0.3 and not ratchet["passed"]  # 0.40 dB below the reference
    assert "pinned reference" in ratchet["reason"]
    custom = PromotionRules(ratchet_budget={"image-restoration": 0.5})
    assert decide(
        report(29.45, 29.30, metric="psnr"),
        custom,
        "m",
        "image-restoration",
        first=False,
        reference=Reference(3, 29.70),
    ).passed
