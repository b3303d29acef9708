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

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from flywheel.errors import FlywheelError

EXAMPLES = 8
SUSPECT = "labels_suspect"


@dataclass
class LabelScreenReport:
    """What the screen did to one run's window (``screen.json`` in the version folder)."""

    screened: int = 0  # new-window samples judged
    bypassed: int = 0  # reviewers' answers: trusted, not judged
    flagged: int = 0
    max_share: float = 1.0
    by_reason: dict[str, int] = field(default_factory=dict)  # kind of reason → count
    examples: list[dict[str, Any]] = field(default_factory=list)  # sample_id, reason, shown values
    sent_to_review: int = 0
    review_error: str | None = None
    seconds: float = 0.0
    skipped: str | None = None  # why nothing was judged (disabled, too few samples, no champion)
    artifacts: list[str] = field(default_factory=list)  # files in the run's review/ folder showing flags

    @property
    def share(self) -> float:
        return self.flagged / self.screened if self.screened else 0.0

    @property
    def suspect(self) -> bool:
        return self.screened > 0 and self.share > self.max_share

    def reason(self) -> str:
        """The refusal's reason, ``labels_suspect: …``."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1]))
        return (
            f"{SUSPECT}: {self.flagged} of {self.screened} labels flagged ({100 * self.share:.0f} % > "
            f"{100 * self.max_share:.0f} % allowed; {kinds})"
        )

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"label screen: not run ({self.skipped})"]
        head = (
            f"label screen: {self.flagged} of {self.screened} new labels flagged ({100 * self.share:.1f} %, "
            f"{100 * self.max_share:.0f} % allowed), {self.bypassed} reviewers' labels trusted, "
            f"{self.seconds:.1f}s"
        )
        out = [head]
        out += [f"  {n} {kind}" for kind, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1])]
        if self.flagged:
            sent = f"{self.sent_to_review} sent to the review queue"
            out.append(f"  {sent}" + (f" (failed: {self.review_error})" if self.review_error else ""))
        for e in self.examples:
            shown = ", ".join(f"{k} {v!r}" for k, v in e.items() if k not in ("sample_id", "reason"))
            out.append(f"  e.g. {e['sample_id']!s:.40}: {e['reason']}" + (f" ({shown})" if shown else ""))
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LabelScreenReport:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class LabelsSuspect(FlywheelError):
    """Too many of the window's labels were flagged: the window is refused before fitting."""

    exit_code = 6

    def __init__(self, report: LabelScreenReport):
        self.report = report
        super().__init__(report.reason())


def _kind(reason: str) -> str:
    """A reason's kind for counting: its words before the first figure or quote."""
    words = []
    for word in reason.split():
        if any(c.isdigit() for c in word) or word[:1] in "'\"+(":
            break
        words.append(word.rstrip(":;,"))
    return " ".join(words) or reason


def screen_run(settings, run) -> LabelScreenReport:
    """Screen ``run``'s new window (see the module docstring): flagged samples go to review
    and out of the run's saved dataset; raises LabelsSuspect for a window with too many."""
    import pandas as pd

    from flywheel.names import is_review_answer
    from flywheel.tasks import spec_for
    from training.model_store import ModelStore
    from training.trainer import load_adapter_model

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
        kind = _kind(flags.reasons[pos])
        report.by_reason[kind] = report.by_reason.get(kind, 0) + 1
        if len(report.examples) < EXAMPLES:
            row = judged.iloc[pos]
            report.examples.append(
                {"sample_id": str(row["sample_id"]), "reason": flags.reasons[pos], **spec.shown_example(row)}
            )
    if len(flagged):
        report.artifacts = [p.name for p in spec.flag_artifacts(champion, flagged, run.folder.review_dir())]
        if cfg.to_review:
            reasons = {str(judged.iloc[p]["sample_id"]): flags.reasons[p] for p in flags.flagged}
            suggested = {str(judged.iloc[p]["sample_id"]): flags.suggested[p] for p in flags.flagged}
            report.sent_to_review, report.review_error = _to_review(
                settings, spec, run.model, flagged, reasons, suggested
            )
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


def _to_review(settings, spec, model: str, flagged, reasons: dict, suggested: dict) -> tuple[int, str | None]:
    """Put the flagged samples in the review queue (``flag`` = the reason); (added, error)."""
    from flywheel.events import validate_event
    from flywheel.redact import redact_text
    from pipelines.records import Origin, RoutedRecord
    from pipelines.review_queue import ReviewQueue

    records = []
    for _, row in flagged.iterrows():
        sid = str(row["sample_id"])
        event = spec.flagged_event(row, model, suggested[sid])
        if event is None:
            continue
        try:
            routed = RoutedRecord.of(validate_event(event), True, 0, Origin("label-screen", 0, 0))
        except FlywheelError as exc:  # one sample that cannot be shown does not hide the others
            return len(records), f"sample {sid}: {redact_text(str(exc))}"
        records.append(dataclasses.replace(routed, flag=reasons[sid]))
    queue = ReviewQueue(settings)
    try:
        queue.add(records)
    except (FlywheelError, OSError) as exc:  # the queue is down: the flags are still recorded
        return 0, redact_text(str(exc))
    finally:
        queue.close()
    return len(records), None
