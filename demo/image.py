"""`make demo-image`: the image-restoration loop on embedded defaults, on real photographs.

1. Starts the embedded broker, the PyFlink stream job and the Feast ingestor under a fresh
   ``.flywheel/demo-image`` state dir.
2. Bootstraps champion v1 of the model ``denoiser`` on patches of the training photos with
   light noise (``noise:15``); the golden set is patches of two other photos with every
   degradation the demo will see, so it measures what users will need.
3. Two rounds of honest feedback, as degradations drift (``noise:25``, then
   ``noise:25+jpeg:40``): the champion (``models:/denoiser@champion``) restores each input,
   users send back the clean target; ~5 % of events are broken images (not PNG, a truncated
   PNG, a target of another size) and go to the dead-letter topic. Each round is retrained
   (LoRA + distillation from the champion) and promoted with golden PSNR rising.
4. A bad update: targets blurred by a buggy pipeline. The candidate learns to blur; the PSNR
   guard rejects it and names why.
5. Prints the version table and the event accounting, and writes a report with a PSNR plot
   and the review grid (degraded | champion | candidate | target), also logged to MLflow.
"""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

from rich.console import Console

from demo.stack import embedded_settings, fresh_start, send, wait_for

MODEL = "denoiser"
STATE = Path(".flywheel/demo-image")
SIZE = 48
BOOT_N, GOLDEN_N, ROUND_N = 360, 90, 240


def demo_settings():
    training = {
        "min_new_samples": ROUND_N // 2,
        "epochs": 4,
        "min_steps": 60,
        "batch_size": 16,
        "learning_rate": 2e-3,
        "head_learning_rate": 2e-3,
        "distill_alpha": 0.3,
        "max_old_holdout": 120,
    }
    return embedded_settings(STATE, training)


def golden_frame():
    """Patches of the golden photos, a third with each degradation the demo will see."""
    import pandas as pd

    from training.image_corpus import DRIFT, GOLDEN_PHOTOS, restoration_frame

    per = GOLDEN_N // len(DRIFT)
    parts = [
        restoration_frame(per * (i + 1), degradation, seed=11, photo_names=GOLDEN_PHOTOS, size=SIZE).tail(per)
        for i, degradation in enumerate(DRIFT)
    ]  # the first rows are the same whatever n: tail() keeps each degradation's patches apart
    return pd.concat(parts, ignore_index=True)


def round_events(settings, frame, round_no: int, rng: random.Random):
    """(valid events, broken raw values, duplicates) of one round: the champion restores each
    input, the user sends the clean target."""
    from flywheel.events import event_time_text, feedback_event
    from orchestration.serving import load_version

    serving = load_version(settings, MODEL)
    restored = serving.predict(frame[["input_png_b64"]].rename(columns={"input_png_b64": "image_png_b64"}))
    now = event_time_text()
    events = [
        feedback_event(
            f"r{round_no}-{row.sample_id}",
            MODEL,
            "image-restoration",
            image_png_b64=row.input_png_b64,
            prediction={"image_png_b64": pred},
            feedback={"target_png_b64": row.target_png_b64},
            label_source="user",
            source="demo-photos",
            event_time=now,
        )
        for row, pred in zip(frame.itertuples(), restored["image_png_b64"], strict=True)
    ]
    bad = []
    for i in range(len(events) * 5 // 100):  # ~5 % broken images, of three kinds
        e = json.loads(json.dumps(events[i]))
        e["event_id"] = f"{e['event_id']}-broken{i}"
        png = base64.b64decode(e["input"]["image_png_b64"])
        if i % 3 == 0:
            e["input"]["image_png_b64"] = base64.b64encode(b"GIF89a not a png").decode()
        elif i % 3 == 1:
            e["input"]["image_png_b64"] = base64.b64encode(png[: len(png) // 2]).decode()
        else:
            e["feedback"]["target_png_b64"] = _other_size_png()  # not the input's size
        bad.append(json.dumps(e).encode())
    dups = [json.dumps(e).encode() for e in rng.sample(events, len(events) * 3 // 100)]
    return events, bad, dups


def _other_size_png() -> str:
    import numpy as np

    from flywheel.images import png_b64

    return png_b64(np.zeros((SIZE, SIZE + 8, 3), dtype=np.uint8))


def main() -> None:
    console = Console()
    started = time.monotonic()
    fresh_start(console, STATE)
    settings = demo_settings()

    from demo.report import report, version_row
    from feature_repo.store import open_store
    from orchestration.flow import bootstrap_model, readiness, retrain
    from orchestration.supervisor import Supervisor
    from pipelines.stats import accounting, wait_until_balanced
    from training.image_corpus import DRIFT, TRAIN_PHOTOS, restoration_frame

    console.rule("1. embedded stack")
    supervisor = Supervisor(settings, ("stream", "ingest"), log=lambda m: console.print(f"  {m}"))
    supervisor.start()
    rows: list[dict] = []
    try:
        console.rule(f"2. bootstrap champion v1 ({BOOT_N} patches, {DRIFT[0]})")
        seed = restoration_frame(BOOT_N, DRIFT[0], seed=0, photo_names=TRAIN_PHOTOS, size=SIZE)
        first = bootstrap_model(settings, MODEL, "image-restoration", seed, golden=golden_frame())
        console.print(f"  v{first.version}: {first.status} ({'; '.join(first.reasons)})")
        rows.append(version_row(first, f"bootstrap {DRIFT[0]}"))
        store = open_store(settings)
        rng = random.Random(7)
        plan = [(DRIFT[1], None), (DRIFT[2], None), (DRIFT[2], "blur")]
        for i, (degradation, corrupt) in enumerate(plan, start=1):
            title = f"{i + 2}. feedback round {i}: {degradation}"
            console.rule(title + (" (a bad update: blurred targets)" if corrupt else ""))
            frame = restoration_frame(
                ROUND_N, degradation, seed=i, photo_names=TRAIN_PHOTOS, size=SIZE, corrupt=corrupt
            )
            events, bad, dups = round_events(settings, frame, i, rng)
            accepted = send(settings, events, bad + dups)
            console.print(
                f"  champion restored {len(frame)} patches; sent {accepted} events, "
                f"{len(bad)} broken images, {len(dups)} duplicates"
            )
            wait_until_balanced(settings, 300)
            wait_for(
                lambda: readiness(settings, MODEL).ready, 300, "Feast ingestion reaching the threshold", STATE
            )
            outcome = retrain(settings, MODEL, if_ready=True, feast_store=store)
            console.print(f"  v{outcome.version}: [bold]{outcome.status}[/bold] {'; '.join(outcome.reasons)}")
            rows.append(version_row(outcome, f"{degradation}" + (f" {corrupt} targets" if corrupt else "")))
        acc = accounting(settings)
    finally:
        supervisor.stop()
    grid = _grid(settings, rows)
    report(
        console,
        settings,
        rows,
        acc,
        time.monotonic() - started,
        model=MODEL,
        folder=STATE / "report",
        metric="psnr",
        baseline="degraded input (no restoration)",
        extra=[grid] if grid else [],
    )


def _grid(settings, rows: list[dict]) -> Path | None:
    """The review grid of the rejected version (degraded | champion | candidate | target)."""
    from training.model_store import ModelStore

    models = ModelStore(settings.state_dir)
    for r in reversed(rows):
        if r["version"] is None:
            continue
        path = models.version_dir(MODEL, r["version"]) / "review" / "grid_golden.png"
        if path.is_file():
            return path
    return None


if __name__ == "__main__":
    main()
