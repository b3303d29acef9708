"""The text-classification task's review: the review note's artifacts, the label screen, the review
queue's view and answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel.events import feedback_event
from flywheel.lazy import lazy_import
from flywheel.tasks.base import (
    batches,
    inference_order,
    pick_device,
    predict,
)
from flywheel.tasks.label_checks import LabelFlags, cross_validated_probs, flag_labels
from flywheel.tasks.text.fields import TextFields

np = lazy_import("numpy")

_matplotlib = lazy_import("matplotlib")
plt = lazy_import("matplotlib.pyplot")


def confusion_png(report, path: Path) -> Path | None:
    _matplotlib.use("Agg")  # before pyplot loads (plt is lazy)

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


class TextReview(TextFields):
    """The review facet of the text task's spec."""

    baseline_caption = "baseline: linear probe on the frozen encoder, fitted on the same training data"
    review_files = ("confusion_golden.png", "misclassified.md")

    def screen_labels(self, champion, frame, labels: list[str], golden):
        """Confident learning on the mean of the champion's probabilities and a cross-validated
        probe's on the champion's sentence embeddings (``flywheel.tasks.label_checks``)."""
        import torch

        if not len(frame):
            return LabelFlags.none(0)
        data = self.dataset(frame, labels)
        base = champion.get_base_model() if hasattr(champion, "get_base_model") else champion
        device = pick_device()[0]
        champion.eval()
        champion.to(device)
        embeds = hasattr(base, "embed")
        features = torch.zeros(len(data), base.config.hidden_size) if embeds else None
        logits = torch.zeros(len(data), len(labels))
        with torch.inference_mode():
            for sel, batch in batches(data, 128, inference_order(data)):
                ids, mask = (t.to(device) for t in self._trimmed(batch))
                if features is not None:  # one pass: the embedding, then the head on it
                    pooled = base.embed(ids, mask)
                    features[sel] = pooled.float().cpu()
                    logits[sel] = base.classifier(pooled).float().cpu()
                else:  # a legacy BertForSequenceClassification version: its probabilities only
                    out = self.forward(champion, {"input_ids": ids, "attention_mask": mask})
                    logits[sel] = out.float().cpu()
        y = data.tensors["labels"].numpy()
        sources = [logits.softmax(-1).numpy()]
        if features is not None:
            probe = cross_validated_probs(features.numpy(), y, len(labels))
            if probe is not None:
                sources.append(probe)
        flagged = flag_labels(y, sources)
        probs = np.mean(np.stack(sources), axis=0)  # the sources' average probabilities
        best = probs.argmax(1)
        reasons: list[str] = []
        suggested: list[dict[str, Any] | None] = []
        for i, hit in enumerate(flagged):
            if hit:
                given, other = labels[int(y[i])], labels[int(best[i])]
                reasons.append(
                    f"label disputed: {given!r} given; the champion and a probe say {other!r} "
                    f"({float(probs[i, best[i]]):.2f} against {float(probs[i, y[i]]):.2f})"
                )
                suggested.append({"label": other, "confidence": round(float(probs[i, best[i]]), 4)})
            else:
                reasons.append("")
                suggested.append(None)
        return LabelFlags(reasons, suggested)

    def flagged_event(self, row, model_name: str, suggested) -> dict[str, Any] | None:
        return feedback_event(
            str(row["sample_id"]),
            model_name,
            self.name,
            text=str(row["text"]),
            prediction=suggested,  # the models' answer and its mean probability (screen_labels)
            label_source="system",
            source="label-screen",
        )

    def review_artifacts(self, report, roles: dict, golden, folder: Path) -> list[Path]:
        """The confusion matrices on the golden set and the candidate's misclassified examples."""

        files = []
        png = confusion_png(report, folder / "confusion_golden.png")
        if png:
            files.append(png)
        (folder / "misclassified.md").write_text(
            misclassified(self, report.labels, roles["candidate"], golden)
        )
        return [*files, folder / "misclassified.md"]
