"""The Great Expectations gate on a training batch.

Row expectations (one suite on the batch): sample_id not null and unique, text not null
with length in bounds, label not null and in the model's label set, confidence in [0, 1].
Class balance (a second suite on the per-label counts): every label of the model has at
least ``min_per_class`` samples, and no label has more than ``max_class_share`` of them.
A failed gate raises GateFailed with a readable report (expectation, failing rows,
examples), which is also saved beside the run as gate.json / gate.txt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.errors import FlywheelError
from flywheel.settings import GateSettings


class GateFailed(FlywheelError):
    exit_code = 6

    def __init__(self, report: GateReport):
        self.report = report
        super().__init__(report.text())


@dataclass
class GateReport:
    success: bool
    rows: int
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def text(self) -> str:
        lines = [
            f"Great Expectations gate on {self.rows} training rows: "
            f"{'passed' if self.success else 'FAILED'} ({len(self.checks) - len(self.failed)}"
            f"/{len(self.checks)} expectations met)"
        ]
        for c in self.failed:
            lines.append(
                f"  - {c['expectation']} on {c['column']}: {c['unexpected_count']} rows fail; "
                f"examples: {c['examples']}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "checks": self.checks}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "gate.json").write_text(json.dumps(self.to_dict(), indent=2, default=str))
        (folder / "gate.txt").write_text(self.text() + "\n")


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


def check_batch(frame, labels: list[str], gate: GateSettings, folder: Path | None = None) -> GateReport:
    """Run the gate; save the report in ``folder``; raise GateFailed if any expectation fails."""
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
    balance = pd.DataFrame(
        {
            "label": list(labels),
            "count": [int(counts.get(label, 0)) for label in labels],
        }
    )
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
    report = GateReport(all(c["success"] for c in checks), len(data), checks)
    if folder is not None:
        report.save(folder)
    if not report.success:
        raise GateFailed(report)
    return report
