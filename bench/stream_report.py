"""The stream benchmark's output: progress lines, the table, bench/results/stream.json."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from stream_load import MIX, PII_SHARE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "stream.json"


def step_line(r: dict) -> str:
    if "latency_s" not in r:
        return f"{r['offered_events_per_s']:,}/s: {'; '.join(r['why_not'])}"
    lat, clean = r["latency_s"], r["to_clean_topic_s"]
    held = "held" if r["held"] else "did not hold: " + "; ".join(r["why_not"])
    return (
        f"{r['offered_events_per_s']:,}/s offered, {r['achieved_events_per_s']:,.0f}/s achieved; to Feast "
        f"p50 {fmt(lat['p50'])} p99 {fmt(lat['p99'])} p99.9 {fmt(lat['p99_9'])} s, to the clean topic p50 "
        f"{fmt(clean['p50'])} p99 {fmt(clean['p99'])} s ({lat['probes']} probes; the generator was "
        f"{r['generator_max_late_s']:.3f} s late at worst); {held}"
    )


def fmt(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f}"


def per_s(x: float | None) -> str:
    return "(too few events to time)" if x is None else f"{x:,.0f}"


# ---- report ----------------------------------------------------------------------------


def highest(steps: list[dict], key: str) -> dict | None:
    """The highest step with ``key`` true, every step below it too."""
    best = None
    for r in steps:
        if not r[key]:
            break
        best = r
    return best


def table(steps: list[dict]) -> None:
    print(
        "| offered/s | achieved/s | to Feast p50 / p99 / p99.9 s | to clean p50 / p99 s | probes (res s) "
        "| backlog growth job / ingest | CPU % job / ingest / gen / broker / bench | check | kept up | held |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in steps:
        if "latency_s" not in r:
            print(f"| {r['offered_events_per_s']:,} | - | - | - | - | - | - | - | no | {r['why_not'][0]} |")
            continue
        lat, clean, cpu = r["latency_s"], r["to_clean_topic_s"], r["cpu_percent_of_one_core"]
        cpus = " / ".join(f"{cpu[k]:.0f}" for k in ("job", "ingestor", "generator", "broker", "bench"))
        print(
            f"| {r['offered_events_per_s']:,} | {r['achieved_events_per_s']:,.0f} "
            f"| {fmt(lat['p50'])} / {fmt(lat['p99'])} / {fmt(lat['p99_9'])} "
            f"| {fmt(clean['p50'])} / {fmt(clean['p99'])} | {lat['probes']} ({lat['resolution_s']:.2f}) "
            f"| {r['job_backlog']['growth']:,} / {r['ingestor_backlog']['growth']:,} | {cpus} "
            f"| {'ok' if r['correct'] else 'FAILED'} | {'yes' if r['kept_up'] else 'no'} "
            f"| {'yes' if r['held'] else 'no: ' + '; '.join(r['why_not'])} |"
        )


def goals(data: dict) -> dict:
    """The issue's goals as ratios measured in this run: end to end ≥ 50 % of the PyFlink
    identity-UDF ceiling and ≥ 60 % of the broker alone; the job alone ≥ 80 % of the UDF ceiling."""

    def ratio(a, b):
        return None if not a or not b else round(a / b, 3)

    e2e, udf = data["sustainable_events_per_s"], data["flink_identity_events_per_s"]
    wanted = {
        "end_to_end_over_identity_udf": (ratio(e2e, udf), 0.5),
        "end_to_end_over_broker": (ratio(e2e, data["broker_ceiling_events_per_s"]), 0.6),
        "job_alone_over_identity_udf": (ratio(data["job_only_events_per_s"], udf), 0.8),
    }
    return {k: {"ratio": r, "goal": g, "met": r is not None and r >= g} for k, (r, g) in wanted.items()}


def results(
    args, ceilings: dict, backlog: dict, steps: list[dict], load: tuple, soak: dict | None = None
) -> dict:
    best, kept = highest(steps, "held"), highest(steps, "kept_up")
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": load},
        "config": {
            "steps": args.steps,
            "warmup_s": args.warmup_s,
            "measure_s": args.measure_s,
            "checkpoint_interval_ms": args.checkpoint_ms,
            "ingest_batch_ms": args.ingest_batch_ms,
            "fetch_wait_ms": args.fetch_wait_ms,
            "probe_rate": args.probe_rate,
            "max_p99_s": args.max_p99_s,
            "mix": {**MIX, "clean": 1 - sum(MIX.values()), "pii_share_of_valid": PII_SHARE},
            "seed": args.seed,
        },
        "latency_method": "intended send time (the open-loop schedule slot) to the end of the first Feast "
        "get_online_features lookup that returns the event, for sampled clean events (an upper bound, late "
        "by at most one poll period); to_clean_topic_s: to when a read_committed tail of the clean topic "
        "first reads it",
        "sustainable_events_per_s": best and best["offered_events_per_s"],
        "p99_s_at_sustainable": best and best["latency_s"]["p99"],
        "kept_up_events_per_s": kept and kept["offered_events_per_s"],
        "p99_s_at_kept_up": kept and kept["latency_s"]["p99"],
        "job_only_events_per_s": backlog.get("job_only_events_per_s"),
        "ingestor_only_rows_per_s": backlog.get("ingestor_only_rows_per_s"),
        "broker_ceiling_events_per_s": ceilings.get("broker", {}).get("events_per_s"),
        "flink_identity_events_per_s": ceilings.get("flink_python", {}).get("events_per_s"),
        "flink_sql_identity_events_per_s": ceilings.get("flink_sql", {}).get("events_per_s"),
        "run_correct": bool(backlog.get("correct"))
        and all(r["correct"] for r in steps)
        and (soak is None or soak["correct"]),
        "ceilings": ceilings,
        "backlog": backlog,
        "steps": steps,
        "soak": soak,
    }
    data["goals"] = goals(data)
    return data


HEADLINES = {
    "sustainable_events_per_s": "sustainable (kept up, p99 within bound), events/s",
    "p99_s_at_sustainable": "  p99 there, s",
    "kept_up_events_per_s": "kept up, whatever the latency, events/s",
    "p99_s_at_kept_up": "  p99 there, s",
    "job_only_events_per_s": "stream job alone on a backlog, events/s",
    "ingestor_only_rows_per_s": "ingestor alone on a backlog, rows/s",
    "broker_ceiling_events_per_s": "broker alone, produce → consume, events/s",
    "flink_identity_events_per_s": "PyFlink identity job, one trivial Python UDF (the job's mode), events/s",
    "flink_sql_identity_events_per_s": "PyFlink identity job, SQL (no Python), events/s",
    "run_correct": "every check passed",
}


def report(
    args, ceilings: dict, backlog: dict, steps: list[dict], load: tuple, soak: dict | None = None
) -> None:
    print(
        f"\nstream, raw → Feast online; {os.cpu_count()} cores (load average {load[0]:.1f} at the start: "
        f"shared machines make figures rough); checkpoints every {args.checkpoint_ms} ms, ingest "
        f"batches ≤ {args.ingest_batch_ms} ms; {args.warmup_s:.0f} s warm-up + {args.measure_s:.0f} s "
        "measured per step; latency from the intended send time\n"
    )
    table(steps)
    data = results(args, ceilings, backlog, steps, load, soak)
    print()
    for key, label in HEADLINES.items():
        value = data[key]
        print(f"{label}: {value:,.2f}" if isinstance(value, float) else f"{label}: {value}")
    for name, g in data["goals"].items():
        print(
            f"goal {name.replace('_', ' ')}: {g['ratio']} (≥ {g['goal']}: {'met' if g['met'] else 'missed'})"
        )
    if soak:
        trend = soak["trend_first_to_last"]
        print(
            f"soak {soak['offered_events_per_s']:,}/s for {soak['seconds']:.0f} s: p99 {trend['p99_s'][0]} → "
            f"{trend['p99_s'][1]} s, broker CPU {trend['broker_cpu_percent'][0]} → "
            f"{trend['broker_cpu_percent'][1]} %, RSS MiB {trend['rss_mib']}; correct: {soak['correct']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
