"""The promotion gate: pure decisions over an evaluation report (no MLflow here).

A candidate passes when no guarded metric regresses beyond its tolerance against the
champion evaluated in the same run on the same holdout. A first version (no champion)
is judged against the configured floors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel.settings import GateRules, Guard


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "promoted" if self.passed else "rejected"


def _value(report: dict, holdout: str, role: str, metric: str) -> float | None:
    return report.get("sets", {}).get(holdout, {}).get(role, {}).get(metric)


def check_guard(report: dict, guard: Guard) -> dict:
    champ = _value(report, guard.holdout, "champion", guard.metric)
    cand = _value(report, guard.holdout, "candidate", guard.metric)
    name = f"{guard.holdout}.{guard.metric}"
    if cand is None:
        return {"guard": name, "passed": False, "reason": f"{name}: the candidate has no value"}
    if champ is None:
        return {"guard": name, "passed": True, "reason": f"{name}: no champion value to compare"}
    allowed = guard.tolerance * abs(champ) if guard.relative else guard.tolerance
    drop = champ - cand if guard.direction == "max" else cand - champ
    ok = drop <= allowed + 1e-12
    tol = f"{guard.tolerance:.0%} relative" if guard.relative else f"{guard.tolerance:g}"
    reason = (
        f"{name} {cand:.4f} vs champion {champ:.4f} ({-drop if guard.direction == 'max' else drop:+.4f}; "
        f"allowed drop {tol})"
    )
    return {"guard": name, "passed": ok, "champion": champ, "candidate": cand, "reason": reason}


def decide(report: dict, rules: GateRules, model: str, task: str, first: bool) -> Verdict:
    """The verdict for a candidate's evaluation report."""
    checks = []
    if first:
        for key, floor in rules.floors.items():
            holdout, metric = key.split(".", 1)
            value = _value(report, holdout, "candidate", metric)
            ok = value is not None and value >= floor
            shown = "missing" if value is None else f"{value:.4f}"
            checks.append(
                {"guard": key, "passed": ok, "candidate": value, "reason": f"{key} {shown} vs floor {floor}"}
            )
    else:
        checks = [check_guard(report, g) for g in rules.guards_for(model, task)]
    reasons = [c["reason"] for c in checks if not c["passed"]]
    return Verdict(not reasons, reasons, checks)
