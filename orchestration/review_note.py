"""The review note of a version: what a reviewer reads in the MLflow UI.

Markdown description (verdict, metric table candidate vs champion with deltas, per-class
deltas, data lineage); the artifacts are the task spec's (text: confusion-matrix PNG and
misclassified examples; images: a degraded | champion | candidate | target grid).
"""

from __future__ import annotations


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _d(a, b) -> str:
    return "-" if a is None or b is None else f"{a - b:+.3f}"


def description(model: str, version: int, report, verdict, lineage, gate, spec, screen=None) -> str:
    """``report``: EvalReport; ``lineage``: Lineage; ``gate``: the data gate's report;
    ``spec``: the task's (which metrics to show, what the baseline is, which artifacts)."""
    m = report.metric
    lines = [
        f"## {model} v{version}: **{verdict.label.upper()}**",
        "",
        *(f"- {r}" for r in (verdict.reasons or ["every guard passed"])),
        *(f"- note: {n}" for n in verdict.notes),
        "",
        "### Guards (paired: the same holdout samples for both models)",
        "",
        "| guard | candidate | against | drop | lower bound | allowed | n | enough for | decision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in verdict.checks:
        against = c.get("champion", c.get("baseline"))
        enough = "-"
        if "min_samples" in c:
            enough = f"{c['detect']:.3g} drop" + (
                f" (needs n={c['min_samples']})" if c["underpowered"] else ""
            )
        lines.append(
            f"| {c['guard']} | {_f(c.get('candidate'))} | {_f(against)} | {_f(c.get('drop'))} "
            f"| {_f(c.get('lower_bound'))} | {_f(c.get('tolerance'))} | {c.get('n', '-')} | {enough} "
            f"| {'pass' if c['passed'] else 'FAIL'} |"
        )
    lines += [
        "",
        f"### Holdout metrics (champion v{report.champion_version or '-'} vs candidate, same run; "
        f"{spec.baseline_caption})",
        "",
        "| holdout | size | metric | baseline | champion | candidate | delta |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in spec.shown_metrics:
        for name, size, base, champ, cand, delta in report.table_rows(metric):
            lines.append(
                f"| {name} | {size} | {metric} | {_f(base)} | {_f(champ)} | {_f(cand)} | {_f(delta)} |"
            )
    if report.forgetting is not None:
        lines += ["", f"Forgetting (old-set {m}, champion - candidate): **{report.forgetting:+.3f}**"]
    golden = report.sets["golden"].roles if "golden" in report.sets else {}
    if "per_class_accuracy" in golden.get("candidate", {}):
        lines += [
            "",
            "### Per-class accuracy on the golden set",
            "",
            "| class | champion | candidate | delta |",
            "|---|---|---|---|",
        ]
        champ = golden.get("champion", {}).get("per_class_accuracy", {})
        for label, value in golden["candidate"]["per_class_accuracy"].items():
            lines.append(
                f"| {label} | {_f(champ.get(label))} | {_f(value)} | {_d(value, champ.get(label))} |"
            )
    lines += ["", "### Data lineage", "", *lineage_lines(lineage)]
    lines += [
        "",
        f"Data gate (Great Expectations): {'passed' if gate.success else 'failed'} ({gate.rows} rows); "
        f"{gate.quarantine.rows} samples quarantined",
        "",
        *(f"- {line}" for line in gate.quarantine.lines()),
    ]
    if screen is not None:  # training.label_screen.LabelScreenReport
        first, *rest = screen.lines()
        lines += [
            "",
            f"Label screen: {first.removeprefix('label screen: ')}",
            "",
            *(f"- {x.strip()}" for x in rest),
        ]
    shown = (*spec.review_files, *(screen.artifacts if screen is not None else ()), "eval.json")
    lines += [
        "",
        "Artifacts: " + ", ".join(f"`review/{name}`" for name in shown) + ".",
    ]
    return "\n".join(lines)


def lineage_lines(lineage) -> list[str]:
    """The note's data-lineage list, review labels per reviewer last."""
    lines = [f"- {k}: {v}" for k, v in lineage.to_dict().items() if k != "review_labels"]
    if lineage.review_labels:
        who = ", ".join(f"{name} {n}" for name, n in lineage.review_labels.items())
        lines.append(f"- review labels per reviewer (new window; an agreed label counts for each): {who}")
    return lines
