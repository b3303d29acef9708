"""The data gate: what a batch of training data must satisfy before anything trains on it.

Two levels, so one bad event never blocks the loop:

* **Per sample** (:func:`quarantine`): rows the gate can judge one by one (no sample_id or a
  repeated one, confidence outside [0, 1], and the task's own checks from its spec: for text,
  text missing or outside the length bounds, label missing or outside the model's label set;
  for images, an image reference missing or malformed) are set aside: left out of training,
  counted by reason, with examples in the run's report and review note.
* **Per batch** (Great Expectations, on what is left): the row expectations again, as the
  batch's validation record, and the task's batch expectations (for text the class balance:
  every label has at least ``min_per_class`` samples, none more than ``max_class_share``).
  A batch that fails is
  refused as a whole: :class:`DataRejected`, with a readable report (expectation, failing
  rows, examples), saved beside the run as ``gate.json`` / ``gate.txt``.

This is the *data* gate; the *promotion* gate (``orchestration.promotion``) judges a trained
candidate's evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from flywheel.errors import FlywheelError
from flywheel.settings import DataGateSettings
from flywheel.tasks.base import shown
from flywheel.tasks.protocols import DataSpec

EXAMPLES_PER_REASON = 3


class DataRejected(FlywheelError):
    """The batch as a whole failed the data gate (not one sample: those are quarantined)."""

    exit_code = 6

    def __init__(self, report: DataGateReport):
        self.report = report
        super().__init__(report.text())


@dataclass
class Quarantine:
    """Samples set aside one by one, by reason, with a few examples of each."""

    rows: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Quarantine) -> Quarantine:
        by_reason = dict(self.by_reason)
        for k, v in other.by_reason.items():
            by_reason[k] = by_reason.get(k, 0) + v
        return Quarantine(self.rows + other.rows, by_reason, self.examples + other.examples)

    def lines(self) -> list[str]:
        out = [f"{n} quarantined: {reason}" for reason, n in self.by_reason.items()]
        for e in self.examples:
            shown = ", ".join(f"{k} {v!r}" for k, v in e.items() if k not in ("sample_id", "reason"))
            out.append(f"  e.g. {e['sample_id']!s:.40}: {e['reason']}" + (f" ({shown})" if shown else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "by_reason": self.by_reason, "examples": self.examples}

    @classmethod
    def from_dict(cls, d: dict | None) -> Quarantine:
        d = d or {}
        return cls(int(d.get("rows", 0)), dict(d.get("by_reason", {})), list(d.get("examples", [])))


@dataclass
class DataGateReport:
    success: bool
    rows: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    quarantine: Quarantine = field(default_factory=Quarantine)

    def refuse(self, expectation: str, unexpected_count: int) -> None:
        """Fail the batch on a check of the gate's own (not a Great Expectations one)."""
        self.checks.append(_own_check(expectation, False, 0, unexpected_count))
        self.success = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    @property
    def reasons(self) -> list[str]:
        return [f"{c['expectation']} on {c['column']}: {c['examples']}" for c in self.failed]

    def text(self) -> str:
        lines = [
            f"Data gate (Great Expectations) on {self.rows} training rows: "
            f"{'passed' if self.success else 'FAILED'} ({len(self.checks) - len(self.failed)}"
            f"/{len(self.checks)} expectations met)"
        ]
        for c in self.failed:
            lines.append(
                f"  - {c['expectation']} on {c['column']}: {c['unexpected_count']} rows fail; "
                f"examples: {c['examples']}"
            )
        lines += self.quarantine.lines()
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rows": self.rows,
            "checks": self.checks,
            "quarantine": self.quarantine.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> DataGateReport:
        return cls(
            bool(d["success"]), int(d["rows"]), d.get("checks", []), Quarantine.from_dict(d.get("quarantine"))
        )


def _reasons(frame, labels: list[str], gate: DataGateSettings, spec: DataSpec):
    """A Series: why each row is quarantined ("" for rows that pass); the task's checks are its spec's."""

    reasons = pd.Series("", index=frame.index, dtype=object)

    def mark(mask, reason: str) -> None:
        mask = mask.fillna(False).astype(bool) & (reasons == "")
        reasons[mask] = reason

    sid = frame["sample_id"]
    mark(sid.isna(), "sample_id missing")
    mark(~sid.map(lambda v: isinstance(v, str)), "sample_id is not a string")
    mark(sid.astype(str).duplicated(keep="first"), "sample_id repeated in the batch")
    spec.quarantine_reasons(frame, labels, gate, mark)
    if "confidence" in frame:
        conf = pd.to_numeric(frame["confidence"], errors="coerce")
        mark(frame["confidence"].notna() & ~conf.between(0, 1), "confidence outside [0, 1]")
    return reasons


def quarantine(frame, labels: list[str], gate: DataGateSettings, spec: DataSpec):
    """(the rows that pass, :class:`Quarantine` of those that do not); ``spec``: the task's."""
    reasons = _reasons(frame, labels, gate, spec)
    bad = reasons != ""
    examples = []
    for reason in reasons[bad].unique():
        for pos in [i for i, r in enumerate(reasons.tolist()) if r == reason][:EXAMPLES_PER_REASON]:
            row = frame.iloc[pos]
            examples.append(
                {"sample_id": shown(row["sample_id"], 80), "reason": reason, **spec.shown_example(row)}
            )
    counts = {str(k): int(v) for k, v in reasons[bad].value_counts().items()}
    return frame[~bad], Quarantine(int(bad.sum()), counts, examples)


def _validate(frame, expectations: list) -> list[dict[str, Any]]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one run, many metrics
    source = context.data_sources.add_pandas("flywheel")
    asset = source.add_dataframe_asset("batch")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = context.suites.add(gx.ExpectationSuite(name="training-batch"))
    for e in expectations:
        suite.add_expectation(e)
    result = batch.validate(suite, result_format="SUMMARY")
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        if cfg is None:
            raise RuntimeError("Great Expectations returned a result without its expectation")
        res = r.result or {}
        checks.append(
            {
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": res.get("unexpected_count", 0 if r.success else None),
                "examples": [str(v)[:80] for v in (res.get("partial_unexpected_list") or [])[:5]],
                "observed": res.get("observed_value"),
            }
        )
    return checks


def validate_batch(
    frame, labels: list[str], gate: DataGateSettings, spec, quarantined: Quarantine | None = None
):
    """Great Expectations on a (quarantined) batch: sample ids and confidences here, the task's
    expectations from its spec; the report, success or not."""
    import great_expectations as gx

    ex = gx.expectations
    data = frame[["sample_id"]].copy()
    data["confidence"] = frame.get("confidence", None)
    data["confidence"] = data["confidence"].astype(float)
    checks = _validate(
        data,
        [
            ex.ExpectColumnValuesToNotBeNull(column="sample_id"),
            ex.ExpectColumnValuesToBeUnique(column="sample_id"),
            ex.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1),
        ],
    )
    for suite in spec.expectations(frame, labels, gate):
        found = _validate(suite.frame, suite.expectations)
        for check in found:
            if not check["success"] and suite.explain is not None:
                suite.explain(check)
        checks += found
    held = quarantined.rows if quarantined else 0
    checks.append(
        _own_check("batch not empty after quarantine", len(data) > 0, len(data), 0 if len(data) else held)
    )
    return DataGateReport(all(c["success"] for c in checks), len(data), checks, quarantined or Quarantine())


def _own_check(expectation: str, success: bool, observed: int, unexpected_count: int) -> dict[str, Any]:
    """A check of the gate's own, in the shape of the Great Expectations ones."""
    return {
        "expectation": expectation,
        "column": "sample_id",
        "success": success,
        "unexpected_count": unexpected_count,
        "examples": [],
        "observed": observed,
    }


def check_batch(frame, labels: list[str], gate: DataGateSettings, spec: DataSpec):
    """Quarantine bad samples, then validate the rest: (clean frame, report)."""
    clean, held = quarantine(frame, labels, gate, spec)
    return clean, validate_batch(clean, labels, gate, spec, held)
