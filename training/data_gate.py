"""The data gate: what a batch of training data must satisfy before anything trains on it.

Two levels, so one bad event never blocks the loop:

* **Per sample** (:func:`quarantine`): rows the gate can judge one by one (no sample_id or a
  repeated one, text missing or outside the length bounds, label missing or outside the
  model's label set, confidence outside [0, 1]) are set aside: left out of training,
  counted by reason, with examples in the run's report and review note.
* **Per batch** (Great Expectations, on what is left): the row expectations again, as the
  batch's validation record, and the class balance (every label of the model has at least
  ``min_per_class`` samples, none has more than ``max_class_share``). A batch that fails is
  refused as a whole: :class:`DataRejected`, with a readable report (expectation, failing
  rows, examples), saved beside the run as ``gate.json`` / ``gate.txt``.

This is the *data* gate; the *promotion* gate (``orchestration.promotion``) judges a trained
candidate's evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flywheel.errors import FlywheelError
from flywheel.settings import DataGateSettings

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
        out += [
            f"  e.g. {e['sample_id']!s:.40}: {e['reason']} (label {e['label']!r}, text {e['text']!r})"
            for e in self.examples
        ]
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


def _reasons(frame, labels: list[str], gate: DataGateSettings):
    """A Series: why each row is quarantined ("" for rows that pass)."""
    import pandas as pd

    reasons = pd.Series("", index=frame.index, dtype=object)

    def mark(mask, reason: str) -> None:
        mask = mask.fillna(False).astype(bool) & (reasons == "")
        reasons[mask] = reason

    sid, text, label = frame["sample_id"], frame["text"], frame["label"]
    mark(sid.isna(), "sample_id missing")
    mark(~sid.map(lambda v: isinstance(v, str)), "sample_id is not a string")
    mark(sid.astype(str).duplicated(keep="first"), "sample_id repeated in the batch")
    mark(text.isna(), "text missing")
    mark(~text.map(lambda v: isinstance(v, str)), "text is not a string")
    mark(text.astype(str).str.strip() == "", "text is blank")
    lengths = text.astype(str).str.len()
    mark(text.notna() & (lengths < gate.min_text_chars), f"text shorter than {gate.min_text_chars} chars")
    mark(text.notna() & (lengths > gate.max_text_chars), f"text longer than {gate.max_text_chars} chars")
    mark(label.isna(), "label missing")
    known = set(labels)
    mark(
        ~label.map(lambda v: isinstance(v, str) and v in known),
        f"label not in the model's label set {list(labels)}",
    )
    if "confidence" in frame:
        conf = pd.to_numeric(frame["confidence"], errors="coerce")
        mark(frame["confidence"].notna() & ~conf.between(0, 1), "confidence outside [0, 1]")
    return reasons


def _shown(value, limit: int) -> str | None:
    """A value as an example in a report: None for a missing one, else its text, cut."""
    import pandas as pd

    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # a list or array: not a scalar, shown as text
        pass
    return str(value)[:limit]


def quarantine(frame, labels: list[str], gate: DataGateSettings):
    """(the rows that pass, :class:`Quarantine` of those that do not)."""
    reasons = _reasons(frame, labels, gate)
    bad = reasons != ""
    examples = []
    for reason in reasons[bad].unique():
        for pos in [i for i, r in enumerate(reasons.tolist()) if r == reason][:EXAMPLES_PER_REASON]:
            row = frame.iloc[pos]
            examples.append(
                {
                    "sample_id": _shown(row["sample_id"], 80),
                    "reason": reason,
                    "label": _shown(row["label"], 40),
                    "text": _shown(row["text"], 60),
                }
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


def validate_batch(frame, labels: list[str], gate: DataGateSettings, quarantined: Quarantine | None = None):
    """Great Expectations on a (quarantined) batch: the report, success or not."""
    import great_expectations as gx
    import pandas as pd

    ex = gx.expectations
    data = frame[["sample_id", "text", "label"]].copy()
    data["confidence"] = frame.get("confidence", None)
    data["confidence"] = data["confidence"].astype(float)
    rows = [
        ex.ExpectColumnValuesToNotBeNull(column="sample_id"),
        ex.ExpectColumnValuesToBeUnique(column="sample_id"),
        ex.ExpectColumnValuesToNotBeNull(column="text"),
        ex.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=gate.min_text_chars, max_value=gate.max_text_chars
        ),
        ex.ExpectColumnValuesToNotBeNull(column="label"),
        ex.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)),
        ex.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1),
    ]
    checks = _validate(data, rows)
    counts = data["label"].value_counts()
    balance = pd.DataFrame({"label": list(labels), "count": [int(counts.get(label, 0)) for label in labels]})
    balance["share"] = balance["count"] / max(1, len(data))
    checks += _validate(
        balance,
        [
            ex.ExpectColumnValuesToBeBetween(column="count", min_value=gate.min_per_class),
            ex.ExpectColumnValuesToBeBetween(column="share", max_value=gate.max_class_share),
        ],
    )
    for c in checks[-2:]:  # name the offending labels, not just their counts
        if not c["success"]:
            col = c["column"]
            bad = balance[
                (balance[col] < gate.min_per_class)
                if col == "count"
                else (balance[col] > gate.max_class_share)
            ]
            c["examples"] = [f"{r.label}: {r.count} ({r.share:.0%})" for r in bad.itertuples()]
            c["column"] = f"label ({col} per label)"
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


def check_batch(frame, labels: list[str], gate: DataGateSettings):
    """Quarantine bad samples, then validate the rest: (clean frame, report)."""
    clean, held = quarantine(frame, labels, gate)
    return clean, validate_batch(clean, labels, gate, held)
