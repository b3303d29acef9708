"""The text task's review artifacts: golden confusion matrices and misclassified examples."""

from __future__ import annotations

from pathlib import Path

from flywheel.tasks.base import predict


def confusion_png(report, path: Path) -> Path | None:
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

    if not len(golden):
        return "no golden set\n"
    logits = predict(adapter, model, adapter.dataset(golden, labels))
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
