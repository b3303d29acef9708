"""The label screen: a retrain's new labels (or image targets) checked before anything
trains on them.

After the data gate, every new-window sample of the run (its training, validation and
new-holdout rows) that is not a reviewers' answer is judged by the task's
``screen_labels`` (``flywheel.tasks.label_checks``: confident learning for classes, alignment,
sharpness and distance for images), using the champion, which has never seen the window.

* A flagged sample is **sent to the review queue** with the reason and **left out** of this
  run and of every later one (``ModelState.flagged``): audits find only about half of such
  flags are real errors, so it is not dropped silently; the reviewers' answer comes back as
  a new sample (``<id>.review``), which the screen trusts.
* A window in which more than ``training.label_screen.max_flagged_share`` of the screened
  samples is flagged is **refused before fitting** (:class:`LabelsSuspect`, reason
  ``labels_suspect``): the retrain flow records it like a data-gate refusal (never replayed)
  and in the history; the fit it saves is the point.

Order under a crash: review items are added before the flagged ids are recorded (both are
idempotent), so a kill between them leaves items a rerun adds again, never flagged samples
that no reviewer will see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

from flywheel.errors import FlywheelError
from flywheel.names import is_review_answer
from flywheel.tasks import spec_for
from training.model_store import ModelStore
from training.screen_report import LabelScreenReport, kind_of
from training.trainer import load_adapter_model

if TYPE_CHECKING:
    from flywheel.settings import Settings

EXAMPLES = 8


class LabelsSuspect(FlywheelError):
    """Too many of the window's labels were flagged: the window is refused before fitting."""

    exit_code = 6

    def __init__(self, report: LabelScreenReport):
        self.report = report
        super().__init__(report.reason())


def screen_run(settings: Settings, run, to_review: Callable | None = None) -> LabelScreenReport:
    """Screen ``run``'s new window (see the module docstring): flagged samples go out of the
    run's saved dataset; raises LabelsSuspect for a window with too many.

    ``to_review(settings, spec, model, flagged rows, reasons by id, suggestions by id)`` puts
    them in the review queue and returns how many (or raises): the retrain flow passes
    ``pipelines.review.queue_flagged``. Only then are they recorded as flagged for good; a
    candidate built without it (`flywheel model train`) leaves them out of itself only."""

    cfg = settings.training.label_screen
    models = ModelStore(settings.state_dir)
    info = models.info(run.model)
    spec = spec_for(settings, info.task)
    train, validation, holdouts = run.folder.dataset()
    parts = {"train": train[train["origin"] == "new"], "validation": validation, "new": holdouts["new"]}
    window = pd.concat(list(parts.values()), ignore_index=True)
    reviewed = window["sample_id"].map(is_review_answer).astype(bool)
    judged = window[~reviewed].reset_index(drop=True)
    report = LabelScreenReport(
        screened=len(judged), bypassed=int(reviewed.sum()), max_share=cfg.max_flagged_share
    )
    skip = (
        "turned off (training.label_screen.enabled)"
        if not cfg.enabled
        else "no champion to judge with"
        if run.champion is None
        else f"{len(judged)} samples to judge, fewer than {cfg.min_samples}"
        if len(judged) < cfg.min_samples
        else None
    )
    if skip:
        report.screened, report.skipped = 0, skip
        run.folder.save_label_screen(report)
        return report
    started = time.monotonic()
    champion = load_adapter_model(spec, info.labels, models.version_dir(run.model, run.champion))
    flags = spec.screen_labels(champion, judged, info.labels, models.golden(run.model))
    report.seconds = round(time.monotonic() - started, 2)
    flagged = judged.iloc[flags.flagged]
    report.flagged = len(flagged)
    for pos in flags.flagged:
        kind = kind_of(flags.reasons[pos])
        report.by_reason[kind] = report.by_reason.get(kind, 0) + 1
        if len(report.examples) < EXAMPLES:
            row = judged.iloc[pos]
            report.examples.append(
                {"sample_id": str(row["sample_id"]), "reason": flags.reasons[pos], **spec.shown_example(row)}
            )
    if len(flagged):
        report.artifacts = [p.name for p in spec.flag_artifacts(champion, flagged, run.folder.review_dir())]
        if to_review is not None:
            if cfg.to_review:
                reasons = {str(judged.iloc[p]["sample_id"]): flags.reasons[p] for p in flags.flagged}
                suggested = {str(judged.iloc[p]["sample_id"]): flags.suggested[p] for p in flags.flagged}
                report.sent_to_review = to_review(settings, spec, run.model, flagged, reasons, suggested)
            models.record_flagged(run.model, [str(i) for i in flagged["sample_id"]])
    run.folder.save_label_screen(report)
    run.lineage.flagged = report.flagged
    if report.suspect:
        run.folder.save_lineage(run.lineage)
        raise LabelsSuspect(report)
    if len(flagged):
        out = set(flagged["sample_id"])
        keep = {k: v[~v["sample_id"].isin(out)] for k, v in parts.items()}
        train = pd.concat([keep["train"], train[train["origin"] != "new"]], ignore_index=True)
        run.folder.save_dataset(train, keep["validation"], {**holdouts, "new": keep["new"]})
        run.lineage.new_train, run.lineage.validation = len(keep["train"]), len(keep["validation"])
        run.lineage.new_holdout = len(keep["new"])
    run.folder.save_lineage(run.lineage)
    return report
