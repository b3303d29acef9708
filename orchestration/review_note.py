"""The review note of a version: what a reviewer reads in the MLflow UI.

Markdown description (verdict, metric table candidate vs champion with deltas, per-class
deltas, data lineage) and artifacts (confusion-matrix PNG, misclassified examples).
"""

from __future__ import annotations

from pathlib import Path


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _d(a, b) -> str:
    return "-" if a is None or b is None else f"{a - b:+.3f}"


def description(model: str, version: int, report, verdict, lineage, gate) -> str:
    """``report``: EvalReport; ``lineage``: Lineage; ``gate``: the data gate's report."""
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
        "baseline: linear probe on the frozen encoder, fitted on the same training data)",
        "",
        "| holdout | size | metric | baseline | champion | candidate | delta |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in (m, "macro_f1"):
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
    lines += ["", "### Data lineage", ""]
    lines += [f"- {k}: {v}" for k, v in lineage.to_dict().items()]
    lines += [
        "",
        f"Data gate (Great Expectations): {'passed' if gate.success else 'failed'} ({gate.rows} rows); "
        f"{gate.quarantine.rows} samples quarantined",
        "",
        *(f"- {line}" for line in gate.quarantine.lines()),
        "",
        "Artifacts: `review/confusion_golden.png`, `review/misclassified.md`, `review/eval.json`.",
    ]
    return "\n".join(lines)


def confusion_png(report: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    golden = report.sets["golden"].roles if "golden" in report.sets else {}
    roles = [r for r in ("champion", "candidate") if "confusion" in golden.get(r, {})]
    if not roles:
        return None
    labels = report.labels
    fig, axes = plt.subplots(1, len(roles), figsize=(4.5 * len(roles), 4))
    axes = [axes] if len(roles) == 1 else list(axes)
    for ax, role in zip(axes, roles, strict=True):
        matrix = golden[role]["confusion"]
        ax.imshow(matrix, cmap="Blues")
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{role}: golden accuracy {golden[role]['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def misclassified(adapter, labels, model, golden, limit: int = 10) -> str:
    from training.trainer import predict

    if not len(golden):
        return "no golden set\n"
    logits = predict(adapter, model, adapter.encode(golden, labels))
    probs = logits.softmax(-1)
    conf, idx = probs.max(-1)
    rows = ["| text | true | predicted | confidence |", "|---|---|---|---|"]
    shown = 0
    for text, true, i, c in zip(golden["text"], golden["label"], idx.tolist(), conf.tolist(), strict=True):
        if labels[i] != true:
            rows.append(f"| {text[:120].replace('|', '/')} | {true} | {labels[i]} | {c:.2f} |")
            shown += 1
            if shown >= limit:
                break
    return "\n".join(rows) + "\n"
