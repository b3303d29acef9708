"""The stream benchmark's soak: one offered rate held for a long time (``--soak-s``), cut into
windows (``--soak-window-s``), to see whether latency, memory or the broker's cost grow.

Per window: achieved rate, p50/p99 latency (intended send time → Feast online) of the probes
due in it, CPU per process (% of one core) and resident memory per process tree (MiB).
Then ``trend``: last window against first, for p99, the broker's CPU and every RSS. tansu's
memory engine keeps every batch in memory and walks a partition's batches on each fetch, so
its memory and CPU are expected to grow with what it holds: the soak measures by how much.
"""

from __future__ import annotations

import os
import time

from stream_load import CLEAN, plan
from stream_watch import CpuMeter, Generator, slope, tree_sum


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, MiB (psutil)."""
    return round(tree_sum(pid, lambda p: p.memory_info().rss) / 2**20, 1)


def run_soak(bench, pipe, rate: int, seconds: float, window_s: float, say, quantiles, settle) -> dict:
    args = bench.args
    count = int(rate * seconds)
    planned = plan(f"soak{rate}", count, args.seed)
    pipe.expect(planned)
    gen = Generator(bench.children, "generator-soak", pipe.config, f"soak{rate}", count, rate, args.seed)
    t0 = gen.wait_for("t0", 300)["t0"]
    every = max(1, round(rate / args.probe_rate))
    probes = {p.event_id: t0 + p.index / rate for p in planned if p.kind == CLEAN and p.index % every == 0}
    pipe.probe.add(probes, restart_period=True)
    pids = {"job": pipe.pid("job"), "ingestor": pipe.pid("ingestor"), "generator": gen.proc.pid}
    pids |= {"broker": bench.broker.status().pid, "bench": os.getpid()}
    windows = []
    start = t0
    while start + window_s <= t0 + seconds + 0.5:
        cpu = CpuMeter(pids, alone=("bench",))
        cpu.start()
        samples = []
        while time.monotonic() < start + window_s:
            samples.append(pipe.sample())
            pipe.alive()
            time.sleep(0.5)
        windows.append(
            {
                "from_s": round(start - t0),
                "achieved_events_per_s": round(slope([(s.t, s.done) for s in samples]), 1),
                "cpu_percent_of_one_core": cpu.stop(),
                "rss_mib": {name: rss_mib(pid) for name, pid in pids.items() if name != "generator"},
            }
        )
        say(f"soak {windows[-1]['from_s']:,} s: {windows[-1]}")
        start += window_s
    generated = gen.finish()
    drained, problems = settle(pipe, args.drain_s)
    latencies = pipe.probe.results(probes)
    for w in windows:
        due = [
            lat
            for eid, lat in zip(probes, latencies, strict=True)
            if 0 <= probes[eid] - t0 - w["from_s"] < window_s
        ]
        w["latency_s"] = quantiles(due)
    first, last = windows[0], windows[-1]
    trend = {
        "p99_s": (first["latency_s"]["p99"], last["latency_s"]["p99"]),
        "broker_cpu_percent": (
            first["cpu_percent_of_one_core"]["broker"],
            last["cpu_percent_of_one_core"]["broker"],
        ),
        "rss_mib": {n: (first["rss_mib"][n], last["rss_mib"][n]) for n in first["rss_mib"]},
    }
    return {
        "offered_events_per_s": rate,
        "seconds": seconds,
        "window_s": window_s,
        "windows": windows,
        "trend_first_to_last": trend,
        "latency_s": quantiles(latencies),
        "generator_max_late_s": round(generated["max_late_s"], 3),
        "drained_after_s": None if drained is None else round(drained, 1),
        "correct": not problems,
        "problems": problems,
    }
