"""The promotion gate's decisions (pure logic)."""

from __future__ import annotations

from flywheel.settings import GateRules, Guard
from orchestration.gate import decide


def report(champ: float, cand: float, old=(0.8, 0.8), metric: str = "accuracy") -> dict:
    return {
        "sets": {
            "golden": {"size": 100, "champion": {metric: champ}, "candidate": {metric: cand}},
            "old": {"size": 100, "champion": {metric: old[0]}, "candidate": {metric: old[1]}},
        }
    }


def test_a_candidate_within_tolerance_passes_and_a_regression_is_rejected_with_reasons():
    rules = GateRules()
    assert decide(report(0.80, 0.796), rules, "m", "text-classification", first=False).passed  # -0.4 points
    verdict = decide(report(0.80, 0.79), rules, "m", "text-classification", first=False)  # -1 point
    assert not verdict.passed and verdict.label == "rejected"
    assert verdict.reasons == ["golden.accuracy 0.7900 vs champion 0.8000 (-0.0100; allowed drop 0.005)"]


def test_forgetting_on_the_old_set_is_guarded():
    verdict = decide(report(0.8, 0.85, old=(0.8, 0.7)), GateRules(), "m", "text-classification", first=False)
    assert not verdict.passed and verdict.reasons[0].startswith("old.accuracy 0.7000")


def test_psnr_is_guarded_relatively():
    rules = GateRules()
    ok = report(30.0, 28.6, metric="psnr")  # -4.7 %
    bad = report(30.0, 28.4, metric="psnr")  # -5.3 %
    assert decide(ok, rules, "m", "image-restoration", first=False).passed
    assert not decide(bad, rules, "m", "image-restoration", first=False).passed


def test_per_model_guards_override_the_task_defaults():
    rules = GateRules(guards_per_model={"lenient": [Guard(metric="accuracy", tolerance=0.5)]})
    assert decide(report(0.8, 0.5), rules, "lenient", "text-classification", first=False).passed
    assert not decide(report(0.8, 0.5), rules, "strict", "text-classification", first=False).passed


def test_a_first_version_is_judged_against_the_floors():
    rules = GateRules(floors={"golden.accuracy": 0.6})
    assert decide(report(0, 0.65), rules, "m", "text-classification", first=True).passed
    verdict = decide(report(0, 0.55), rules, "m", "text-classification", first=True)
    assert not verdict.passed and "golden.accuracy 0.5500 vs floor 0.6" in verdict.reasons[0]


def test_a_missing_candidate_metric_fails_closed():
    r = report(0.8, 0.8)
    del r["sets"]["golden"]["candidate"]["accuracy"]
    assert not decide(r, GateRules(), "m", "text-classification", first=False).passed
