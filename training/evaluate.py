"""Evaluate candidate, champion and baseline in the same run on the same holdouts.

The report (``eval.json`` beside the version, consumed by the registry gate)::

    {"model", "task", "labels", "metric": "accuracy",
     "sets": {"golden": {"size": n, "champion": {...metrics}, "candidate": {...}, "baseline": {...},
                         "per_sample": {role: {metric: [value per sample]}}}, "old": ..., "new": ...},
     "forgetting": champion old-set accuracy - candidate old-set accuracy}

The baseline is the task's probe fitted on the candidate's training data (saved beside the
version by the trainer); the per-sample values let the gate compare roles pair by pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from training.tasks import TaskAdapter
from training.trainer import predict


def evaluate(
    adapter: TaskAdapter, labels: list[str], models: dict, holdouts: dict, batch_size: int = 128
) -> dict:
    """``models``: role → model (None is skipped); ``holdouts``: set name → DataFrame."""
    sets = {}
    for set_name, frame in holdouts.items():
        entry: dict = {"size": len(frame)}
        if len(frame):
            batch = adapter.encode(frame, labels)
            for role, model in models.items():
                if model is not None:
                    out = predict(adapter, model, batch, batch_size)
                    entry[role] = adapter.metrics(out, batch, labels)
                    entry.setdefault("per_sample", {})[role] = adapter.per_sample(out, batch)
        sets[set_name] = entry
    report = {"task": adapter.name, "labels": labels, "metric": adapter.primary_metric, "sets": sets}
    old = sets.get("old", {})
    if "champion" in old and "candidate" in old:
        m = adapter.primary_metric
        report["forgetting"] = old["champion"][m] - old["candidate"][m]
    return report


def version_roles(adapter: TaskAdapter, labels: list[str], folder: Path, champion_dir: Path | None = None):
    """The models an evaluation of the version in ``folder`` scores: the candidate, the baseline
    saved beside it and, for a retrain, the champion it was trained from."""
    from training.trainer import load_adapter_model

    roles = {"champion": load_adapter_model(adapter, labels, champion_dir)} if champion_dir else {}
    roles["candidate"] = load_adapter_model(adapter, labels, folder)
    roles["baseline"] = adapter.load_baseline(labels, folder)
    return roles


def save_report(report: dict, folder: Path) -> Path:
    path = folder / "eval.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def table_rows(report: dict):
    """(set, size, baseline, champion, candidate, delta) rows of the primary metric, for printing."""
    m = report["metric"]
    for name, entry in report["sets"].items():
        base = entry.get("baseline", {}).get(m)
        champ = entry.get("champion", {}).get(m)
        cand = entry.get("candidate", {}).get(m)
        delta = cand - champ if champ is not None and cand is not None else None
        yield name, entry["size"], base, champ, cand, delta


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"
