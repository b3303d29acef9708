"""The training dataset of one run: a new window from Feast, a replay sample, fixed holdouts.

* **New window**: labelled samples of the model ingested after its training watermark and
  up to the run's cut time, by point-in-time retrieval of the ``training`` feature service.
* **Old data**: the bootstrap data and every labelled sample ingested up to the watermark,
  except the windows of rejected runs (a candidate the promotion gate refused, or a batch
  the data gate refused, is never replayed).
  A class-stratified replay sample of it (``replay_ratio`` times the new training samples) is
  trained on again, against forgetting.
* **Cap**: a window with more than ``max_new_samples`` new samples (when set) is cut to a
  class-stratified sample of that size, so one retrain's time stays bounded after a burst;
  the samples left out are not lost: past the watermark they are old data, replayable.
* **Splits** come from a hash of ``sample_id`` (the same for every run): the lowest
  ``holdout_fraction`` is held out, the next ``validation_fraction`` is validation, the
  rest may be trained on. A held-out sample never enters training, in any window.
* **Holdouts**: the golden set (fixed at bootstrap), the old-data holdout (capped at
  ``max_old_holdout``, class-stratified) and the new-window holdout.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from feature_repo.definitions import CREATED, JOIN_KEY
from feature_repo.store import historical_samples
from flywheel.errors import FlywheelError
from flywheel.names import reviewers_of
from flywheel.privacy import Forgotten
from flywheel.tasks import spec_for
from flywheel.tasks.protocols import DataSpec
from training.data import split_by_hash, stratified_sample
from training.model_store import ModelStore

if TYPE_CHECKING:
    from flywheel.settings import Settings


def train_columns(spec: DataSpec) -> list[str]:
    """A training sample's columns: its id, the task's sample columns, and a confidence."""
    return ["sample_id", *spec.sample_columns, "confidence"]


class NoNewData(FlywheelError):
    """The window since the watermark holds no labelled samples to train on."""


@dataclass
class TrainingData:
    train: object  # DataFrame: train_columns(spec) + origin (new | replay)
    validation: object  # new-window validation split (early stopping)
    holdouts: dict[str, object]  # golden, old, new
    window: tuple[datetime | None, datetime]
    counts: dict[str, Any] = field(default_factory=dict)

    def lineage(self) -> dict:
        start, end = self.window
        return {
            "window_start": start.isoformat() if start else None,
            "window_end": end.isoformat(),
            **self.counts,
        }


def labelled_samples(settings: Settings, feast_store, spec: DataSpec, model_name: str, start, end):
    """Samples (with a verified answer) of a model ingested in ``(start, end]``
    (``train_columns(spec)`` + ingested_at)."""

    rows = historical_samples(feast_store, settings, model_name, start, end, window_on=CREATED)
    rows = rows[spec.is_sample(rows)]
    columns = [*train_columns(spec), CREATED, "source"]
    return rows.rename(columns={JOIN_KEY: "sample_id"})[columns].reset_index(drop=True)


def build_dataset(
    settings: Settings, models: ModelStore, feast_store, name: str, cut: datetime
) -> TrainingData:

    cfg = settings.training
    info = models.info(name)
    spec = spec_for(settings, info.task)
    columns = train_columns(spec)
    watermark = models.watermark(name)
    golden = models.golden(name)
    new = labelled_samples(settings, feast_store, spec, name, watermark, cut)
    new = new[~new["sample_id"].isin(golden["sample_id"])]
    flagged = set(models.state(name).flagged)  # sent to review by the label screen: never trained on
    new = new[~new["sample_id"].isin(flagged)]
    if new.empty:
        raise NoNewData(
            f"model {name!r} has no labelled samples ingested after its watermark {watermark}; "
            "send feedback with labels (and run `flywheel ingest`) before training"
        )
    older = labelled_samples(settings, feast_store, spec, name, None, watermark) if watermark else None
    if flagged and older is not None:
        older = older[~older["sample_id"].isin(flagged)]
    if older is not None:
        for window in models.state(name).excluded_windows:
            inside = older[CREATED] <= pd.Timestamp(window.end)
            if window.start:
                inside &= older[CREATED] > pd.Timestamp(window.start)
            older = older[~inside]  # data of a rejected run, or one the data gate refused, is not replayed
    boot = models.bootstrap_data(name).assign(confidence=lambda f: f.get("confidence", 1.0))
    parts = [boot[columns]] + ([older[columns]] if older is not None and len(older) else [])
    old = pd.concat(parts)
    new, old = without_forgotten(settings, new), without_forgotten(settings, old)
    if new.empty:
        raise NoNewData(
            f"model {name!r} has no labelled samples left after its watermark once erased ones are out"
        )
    old = old[~old["sample_id"].isin(golden["sample_id"])]
    if spec.strata is not None:  # a sample of a class the model does not have is not replayed
        old = old[old[spec.strata].isin(info.labels)]
    new, left_out = cap_window(new, cfg.max_new_samples, cfg.seed, spec.strata)
    data = assemble(cfg, spec, new, old.drop_duplicates("sample_id"), golden, (watermark, cut))
    data.counts["new_left_out"] = left_out
    data.counts["review_labels"] = review_labels(new["source"])
    return data


def build_full_dataset(
    settings: Settings, models: ModelStore, feast_store, name: str, cut: datetime
) -> TrainingData:
    """The dataset of a retrain from the base model (after an erasure, ``flywheel forget
    --retrain``): every labelled sample still held up to ``cut`` (feedback of every window
    not refused, and the bootstrap data), nothing erased, flagged or held out. Splits and
    holdouts as for a window: the feedback's splits are the new side, the bootstrap data's
    the old."""

    cfg = settings.training
    info = models.info(name)
    spec = spec_for(settings, info.task)
    columns = train_columns(spec)
    golden = models.golden(name)
    feedback = labelled_samples(settings, feast_store, spec, name, None, cut)
    flagged = set(models.state(name).flagged)
    feedback = feedback[~feedback["sample_id"].isin(flagged | set(golden["sample_id"]))]
    for window in models.state(name).excluded_windows:
        inside = feedback[CREATED] <= pd.Timestamp(window.end)
        if window.start:
            inside &= feedback[CREATED] > pd.Timestamp(window.start)
        feedback = feedback[~inside]
    boot = models.bootstrap_data(name).assign(confidence=lambda f: f.get("confidence", 1.0))
    boot = boot[~boot["sample_id"].isin(golden["sample_id"])]
    if spec.strata is not None:
        feedback = feedback[feedback[spec.strata].isin(info.labels)]
        boot = boot[boot[spec.strata].isin(info.labels)]
    feedback, boot = without_forgotten(settings, feedback), without_forgotten(settings, boot[columns])
    h, v = cfg.holdout_fraction, cfg.validation_fraction
    new_train, new_val, new_holdout = split_by_hash(feedback[columns], h, v)
    old_train, old_val, old_holdout = split_by_hash(boot.drop_duplicates("sample_id"), h, v)
    old_holdout = stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed, column=spec.strata)
    train = pd.concat([new_train.assign(origin="new"), old_train.assign(origin="replay")], ignore_index=True)
    validation = pd.concat([new_val, old_val], ignore_index=True)
    data = TrainingData(
        train=train,
        validation=validation,
        holdouts={"golden": golden, "old": old_holdout, "new": new_holdout},
        window=(None, cut),
        counts={
            "new_samples": len(feedback),
            "new_train": len(new_train),
            "replay": len(old_train),
            "validation": len(validation),
            "golden": len(golden),
            "old_holdout": len(old_holdout),
            "new_holdout": len(new_holdout),
        },
    )
    data.counts["review_labels"] = review_labels(feedback["source"])
    return data


def without_forgotten(settings: Settings, frame):
    """``frame`` less the samples erased on request (``flywheel.privacy.Forgotten``): a replay
    of a forgotten event that reached the store anyway is never trained on."""
    forgotten = Forgotten.of(settings)
    gone = forgotten.which((i, None) for i in frame["sample_id"])
    forgotten.close()
    return frame[~frame["sample_id"].isin(gone)] if gone else frame


def cap_window(new, max_new: int | None, seed: int, strata: str | None):
    """``new`` cut to a class-stratified sample of ``max_new`` rows when it holds more (and
    how many were left out); the same rows for the same window and seed."""
    if max_new is None or len(new) <= max_new:
        return new, 0
    kept = stratified_sample(new, max_new, seed, column=strata)
    return kept, len(new) - len(kept)


def review_labels(sources) -> dict[str, int]:
    """Review labels per reviewer among samples' ``source`` values (``review:alice+bob`` counts
    for both)."""

    counts = Counter(r for source in sources for r in reviewers_of(source))
    return dict(sorted(counts.items()))


def assemble(cfg, spec: DataSpec, new, old, golden, window) -> TrainingData:
    """Splits, replay and holdouts of a run from its new window, the old data and the golden set."""

    columns = train_columns(spec)
    new, old = new[columns], old[columns]
    h, v = cfg.holdout_fraction, cfg.validation_fraction
    new_train, new_val, new_holdout = split_by_hash(new, h, v)
    old_pool, _, old_holdout = split_by_hash(old, h, v)
    old_holdout = stratified_sample(old_holdout, cfg.max_old_holdout, cfg.seed, column=spec.strata)
    replay = stratified_sample(
        old_pool, round(cfg.replay_ratio * len(new_train)), cfg.seed, column=spec.strata
    )
    train = pd.concat([new_train.assign(origin="new"), replay.assign(origin="replay")], ignore_index=True)
    return TrainingData(
        train=train,
        validation=new_val.reset_index(drop=True),
        holdouts={"golden": golden, "old": old_holdout, "new": new_holdout},
        window=window,
        counts={
            "new_samples": len(new),
            "new_train": len(new_train),
            "replay": len(replay),
            "validation": len(new_val),
            "golden": len(golden),
            "old_holdout": len(old_holdout),
            "new_holdout": len(new_holdout),
        },
    )
