"""Evaluate candidate, champion and baseline in the same run on the same holdouts.

:class:`EvalReport` is the contract between evaluation and the promotion gate, the registry,
the review note and the CLI; it is written (``eval.json`` beside the version, through
``VersionFolder``) and read only as this object::

    {"model", "version", "champion_version", "task", "labels", "metric": "accuracy",
     "sets": {"golden": {"size": n, "champion": {...metrics}, "candidate": {...}, "baseline": {...},
                         "per_sample": {role: {metric: [value per sample]}}}, "old": ..., "new": ...},
     "forgetting": champion old-set metric - candidate old-set metric}

The baseline is the task's probe fitted on the candidate's training data (saved beside the
version by the trainer); the per-sample values let the gate compare roles pair by pair.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from flywheel.tasks.base import cpu_threads, evidence_of
from flywheel.tasks.protocols import Learner

ROLES = ("baseline", "champion", "candidate")


@dataclass
class SetScores:
    """One holdout: its size, each role's metrics and per-sample values."""

    size: int
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_sample: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"size": self.size, **self.roles}
        if self.per_sample:
            d["per_sample"] = self.per_sample
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SetScores:
        roles = {k: v for k, v in d.items() if k in ROLES}
        return cls(int(d.get("size", 0)), roles, d.get("per_sample", {}))


@dataclass
class EvalReport:
    task: str
    labels: list[str]
    metric: str
    sets: dict[str, SetScores]
    model: str | None = None
    version: int | None = None
    champion_version: int | None = None

    @property
    def forgetting(self) -> float | None:
        """Champion old-set metric minus the candidate's (positive: the candidate forgot)."""
        champ, cand = self.value("old", "champion"), self.value("old", "candidate")
        return champ - cand if champ is not None and cand is not None else None

    def value(self, holdout: str, role: str, metric: str | None = None):
        entry = self.sets.get(holdout)
        return None if entry is None else entry.roles.get(role, {}).get(metric or self.metric)

    def scores(self, holdout: str, role: str, metric: str | None = None) -> list[float] | None:
        entry = self.sets.get(holdout)
        return None if entry is None else entry.per_sample.get(role, {}).get(metric or self.metric)

    def flat_metrics(self) -> dict[str, float]:
        """``<holdout>.<role>.<metric>`` for every scalar metric, plus ``forgetting`` (for MLflow)."""
        out = {}
        for name, entry in self.sets.items():
            for role, metrics in entry.roles.items():
                for metric, value in metrics.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        out[f"{name}.{role}.{metric}"] = float(value)
        if self.forgetting is not None:
            out["forgetting"] = float(self.forgetting)
        return out

    def table_rows(self, metric: str | None = None):
        """(set, size, baseline, champion, candidate, delta) rows of a metric, for printing."""
        m = metric or self.metric
        for name, entry in self.sets.items():
            base, champ, cand = (entry.roles.get(r, {}).get(m) for r in ROLES)
            delta = cand - champ if champ is not None and cand is not None else None
            yield name, entry.size, base, champ, cand, delta

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "champion_version": self.champion_version,
            "task": self.task,
            "labels": self.labels,
            "metric": self.metric,
            "sets": {k: v.to_dict() for k, v in self.sets.items()},
        }
        if self.forgetting is not None:
            d["forgetting"] = self.forgetting
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EvalReport:
        return cls(
            task=d.get("task", ""),
            labels=list(d.get("labels", [])),
            metric=d.get("metric", "accuracy"),
            sets={k: SetScores.from_dict(v) for k, v in d.get("sets", {}).items()},
            model=d.get("model"),
            version=d.get("version"),
            champion_version=d.get("champion_version"),
        )


def evaluate(
    spec: Learner,
    labels: list[str],
    models: dict,
    holdouts: dict,
    batch_size: int = 128,
    timings: dict[str, float] | None = None,
) -> EvalReport:
    """``models``: role → model (None is skipped); ``holdouts``: set name → DataFrame.
    ``timings`` (when given) gets the seconds spent on each holdout."""

    with cpu_threads(spec):
        return EvalReport(
            spec.name,
            list(labels),
            spec.primary_metric,
            _sets(spec, labels, models, holdouts, batch_size, {} if timings is None else timings),
        )


def _sets(
    spec: Learner, labels: list[str], models: dict, holdouts: dict, batch_size: int, timings: dict
) -> dict:
    sets = {}
    for set_name, frame in holdouts.items():
        started = time.perf_counter()
        entry = SetScores(len(frame))
        if len(frame):
            data = spec.dataset(frame, labels)
            for role, model in models.items():
                if model is not None:
                    found, _ = evidence_of(spec, model, data, batch_size)
                    entry.roles[role] = spec.metrics(found, labels)
                    entry.per_sample[role] = spec.per_sample(found)
        sets[set_name] = entry
        timings[set_name] = round(time.perf_counter() - started, 3)
    return sets


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"
