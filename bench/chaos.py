"""The chaos drill behind ``bench/bench_soak.py`` (hours) and ``tests/integration/test_chaos_drill.py``
(minutes): ``flywheel run`` on embedded defaults under mixed traffic, parts killed with
SIGKILL at set times, then the accounting: every acknowledged event has exactly one
recorded fate (``pipelines.fates``), none is missing.

Traffic: HTTP ``POST /v1/feedback`` batches (labelled events → clean, unlabelled
low-confidence predictions → review, a resent batch → duplicates) and the SDK's
``send_raw`` with events the stream job refuses (→ dlq). Only what was acknowledged (202,
or accepted by the SDK) is counted; a refused request (503 while a part is down) is
retried with new ids, as a client would.

Every kill is by pid of a process this drill started (``flywheel run``) or that it started
(its parts, from ``run/health.json``; the broker, from ``broker.json``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.procs import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("broker", "stream", "ingest", "http")


def event(i: int, run: str, kind: str) -> dict:
    """A feedback event of the drill: ``clean`` (labelled), ``review`` (unlabelled, low
    confidence) or ``dlq`` (valid JSON the contract refuses: no input)."""
    base = {
        "schema_version": 1,
        "event_id": f"{run}-{kind}-{i}",
        "event_time": "2026-12-01T12:00:00Z",
        "source": "drill",
        "model_name": "sentiment",
        "task": "text-classification",
        "model_version": "1",
        "input": {"text": f"drill text {i} {'good' if i % 2 else 'bad'} day"},
        "prediction": {"label": "positive", "confidence": 0.9},
        "feedback": {"label": "positive" if i % 2 else "negative"},
        "label_source": "user",
    }
    if kind == "review":
        base["prediction"] = {"label": "positive", "confidence": 0.3}
        del base["feedback"]
        base["label_source"] = "system"
    if kind == "dlq":
        del base["input"]
    return base


@dataclass
class Kill:
    at_s: float
    part: str
    pid: int | None = None
    done_at: float | None = None
    recovered_s: float | None = None


@dataclass
class DrillReport:
    acknowledged: int = 0
    refused: int = 0
    fates: dict[str, int] = field(default_factory=dict)
    repeats: int = 0  # copies of an acknowledged ident seen again (resent batches, re-deliveries)
    missing: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    rss: list[dict] = field(default_factory=list)  # every sample: time and MB of broker/stream/ingest
    latency_p99_s: list[tuple[float, float]] = field(default_factory=list)  # window start, p99 ack → fate
    seconds: float = 0.0

    @property
    def accounted(self) -> int:
        return self.acknowledged - len(self.missing)


def _rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` and its descendants (the stream part's JVM), in MB."""
    if pid is None:
        return None
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        stack += [int(c) for c in children]
    return total / 1024


class Drill:
    def __init__(
        self,
        workdir: Path,
        rate: float = 50.0,
        batch: int = 10,
        log=print,
        external_broker: str | None = None,
        **settings_extra,
    ):
        """``external_broker``: ``kafka.bootstrap_servers`` of a broker this loop does not own."""
        from flywheel.broker import free_port
        from flywheel.settings import load_settings

        self.workdir = Path(workdir)
        self.log = log
        self.rate, self.batch = rate, batch
        extra = {"run": {"check_interval_s": 3600, "metrics_port": None}, **settings_extra}
        kafka = {"delivery_timeout_s": 10}
        if external_broker:
            kafka["bootstrap_servers"] = external_broker
        self.settings = load_settings(
            state_dir=self.workdir / "state",
            broker={"port": free_port()},
            http={"port": free_port()},
            kafka=kafka,
            **extra,
        )
        self.config = self.settings.write_resolved(self.workdir / "flywheel.yaml")
        self.proc: subprocess.Popen | None = None
        self.acked: dict[str, float] = {}  # ident → time acknowledged
        self.report = DrillReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._seq = 0

    # ---- the loop under test ---------------------------------------------------------

    def start(self, timeout_s: float = 240) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        self.out = open(self.workdir / "flywheel-run.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "--config", str(self.config), "run"],
            cwd=ROOT,
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # an interrupted drill leaves no loop behind
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flywheel run exited: see {self.workdir / 'flywheel-run.log'}")
            if self._ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"flywheel run not ready in {timeout_s}s: see {self.workdir}")

    def _ready(self) -> bool:
        import httpx

        from pipelines import job_health

        parts = self.parts()
        job = job_health.read(self.settings.state_dir)
        if not parts or not all(p.get("running") for p in parts.values()) or job is None:
            return False
        try:
            up = httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            up = False
        return up and job.state == "RUNNING"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.http.port}"

    def parts(self) -> dict:
        try:
            return json.loads((self.settings.state_dir / "run" / "health.json").read_text())["parts"]
        except (OSError, ValueError, KeyError):
            return {}

    def pid_of(self, part: str) -> int | None:
        if part == "broker":
            try:
                return json.loads((self.settings.state_dir / "broker.json").read_text())["pid"]
            except (OSError, ValueError, KeyError):
                return None
        return self.parts().get(part, {}).get("pid")

    def stop(self) -> int:
        self._stop.set()
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()
        return self.proc.returncode

    # ---- traffic ----------------------------------------------------------------------

    def _next(self, n: int) -> int:
        with self._lock:
            start = self._seq
            self._seq += n
            return start

    def http_load(self, run: str) -> None:
        """POST batches at about ``rate`` events/s until stopped; every 10th batch is sent
        twice (the second time its events are duplicates)."""
        import httpx

        client = httpx.Client(timeout=60)
        period = self.batch / self.rate
        sent_batches = 0
        while not self._stop.is_set():
            started = time.monotonic()
            start = self._next(self.batch)
            kinds = ["review" if (start + k) % 5 == 0 else "clean" for k in range(self.batch)]
            batch = [event(start + k, run, kind) for k, kind in enumerate(kinds)]
            copies = 2 if sent_batches % 10 == 9 else 1
            for _ in range(copies):
                try:
                    answer = client.post(f"{self.base}/v1/feedback", json=batch)
                    ok = answer.status_code == 202
                except httpx.HTTPError:
                    ok = False
                if ok:
                    now = time.time()
                    with self._lock:
                        for e in answer.json()["accepted"]:
                            self.acked.setdefault(e, now)
                else:
                    self.report.refused += len(batch)
            sent_batches += 1
            self._stop.wait(max(0.0, period - (time.monotonic() - started)))
        client.close()

    def predict_load(self, run: str, model: str = "sentiment", every_s: float = 1.0) -> None:
        """Every ``every_s``: ``POST /v1/predict`` with 4 texts; each prediction answered is
        acknowledged (its fate is the live ledger), and feedback naming only its
        ``prediction_id`` is sent back (joined to it by the ingestor)."""
        import httpx

        client = httpx.Client(timeout=60)
        while not self._stop.wait(every_s):
            start = self._next(4)
            texts = [f"predict {i} {'great' if i % 2 else 'awful'} service" for i in range(start, start + 4)]
            try:
                answer = client.post(
                    f"{self.base}/v1/predict",
                    json={"model_name": model, "inputs": [{"text": t} for t in texts]},
                )
            except httpx.HTTPError:
                continue
            if answer.status_code != 200:
                continue
            now = time.time()
            ids = [p["prediction_id"] for p in answer.json()["predictions"]]
            with self._lock:
                for pid in ids:
                    self.acked.setdefault(pid, now)
            feedback = []
            for k, pid in enumerate(ids):
                e = event(start + k, run, "clean")
                e.update(event_id=f"{run}-joined-{start + k}", prediction_id=pid)
                e["input"] = {"text": texts[k]}
                feedback.append(e)
            try:
                reply = client.post(f"{self.base}/v1/feedback", json=feedback)
            except httpx.HTTPError:
                continue
            if reply.status_code == 202:
                now = time.time()
                with self._lock:
                    for e in reply.json()["accepted"]:
                        self.acked.setdefault(e, now)
        client.close()

    def sdk_load(self, run: str, every_s: float = 2.0) -> None:
        """Every ``every_s``: events the stream job refuses, by the SDK (its own journal writer)."""
        from flywheel.errors import BrokerError
        from pipelines.sdk import FeedbackClient

        client = None
        while not self._stop.wait(every_s):
            try:
                client = client or FeedbackClient(self.settings, check_connection=False)
                start = self._next(3)
                values = [json.dumps(event(start + k, run, "dlq")).encode() for k in range(3)]
                result = client.send_raw(values)
            except BrokerError:
                self.report.refused += 3
                continue
            now = time.time()
            with self._lock:
                for ident in result.accepted:
                    self.acked.setdefault(ident, now)
            self.report.refused += len(result.failed)

    # ---- chaos and the accounting -------------------------------------------------------

    def kill(self, kill: Kill) -> None:
        """SIGKILL the part now; record when it answers again."""
        kill.pid = self.pid_of(kill.part)
        if kill.pid is None:
            self.log(f"drill: no pid for {kill.part}; skipped")
            return
        os.kill(kill.pid, signal.SIGKILL)
        kill.done_at = time.monotonic()
        self.log(f"drill: killed {kill.part} (pid {kill.pid}) at {kill.at_s:.0f}s")

    def recovered(self, kill: Kill) -> bool:
        """The part is back: a new pid running, and for the broker and the HTTP app, a new
        acknowledgement after the kill; for the stream job, its job RUNNING again."""
        from pipelines import job_health

        pid = self.pid_of(kill.part)
        if pid is None or pid == kill.pid:
            return False
        if kill.part == "stream":
            job = job_health.read(self.settings.state_dir)
            return job is not None and job.pid == pid and job.state == "RUNNING"
        if kill.part in ("broker", "http"):
            wall_kill = time.time() - (time.monotonic() - kill.done_at)
            with self._lock:
                return any(t > wall_kill for t in self.acked.values())
        return bool(self.parts().get(kill.part, {}).get("running"))

    def sample_rss(self, t0: float) -> None:
        self.report.rss.append(
            {
                "t_s": time.monotonic() - t0,
                **{p: _rss_mb(self.pid_of(p)) for p in ("broker", "stream", "ingest")},
            }
        )

    def run(
        self,
        seconds: float,
        kills: list[Kill],
        sample_every_s: float = 600,
        run_id: str | None = None,
        predict: bool = False,
    ) -> DrillReport:
        run_id = run_id or "d" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
        t0 = time.monotonic()
        loaders = [
            threading.Thread(target=self.http_load, args=(run_id,), daemon=True),
            threading.Thread(target=self.sdk_load, args=(run_id,), daemon=True),
        ]
        if predict:
            loaders.append(threading.Thread(target=self.predict_load, args=(run_id,), daemon=True))
        for t in loaders:
            t.start()
        pending = sorted(kills, key=lambda k: k.at_s)
        watching: list[Kill] = []
        next_sample = 0.0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic() - t0
            if pending and now >= pending[0].at_s:
                kill = pending.pop(0)
                self.kill(kill)
                if kill.done_at is not None:
                    watching.append(kill)
                    self.report.kills.append(kill)
            for kill in list(watching):
                if self.recovered(kill):
                    kill.recovered_s = time.monotonic() - kill.done_at
                    self.log(f"drill: {kill.part} recovered in {kill.recovered_s:.1f}s")
                    watching.remove(kill)
            if now >= next_sample:
                self.sample_rss(t0)
                next_sample += sample_every_s
            time.sleep(0.5)
        self._stop.set()
        for t in loaders:
            t.join(90)
        self.sample_rss(t0)
        deadline = time.monotonic() + 120
        while watching and time.monotonic() < deadline:
            for kill in list(watching):
                if self.recovered(kill) or kill.part in ("broker", "http"):
                    kill.recovered_s = kill.recovered_s or (time.monotonic() - kill.done_at)
                    watching.remove(kill)
            time.sleep(0.5)
        self.report.seconds = time.monotonic() - t0
        return self.report

    def account(self, timeout_s: float = 300) -> DrillReport:
        """Wait until every acknowledged ident has a fate (or ``timeout_s``); fill the report."""
        from pipelines.fates import FateLedger

        ledger = FateLedger.of(self.settings)
        try:
            idents = list(self.acked)
            deadline = time.monotonic() + timeout_s
            while True:
                missing = set(idents) - ledger.known(idents)
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(2)
            self.report.acknowledged = len(idents)
            self.report.missing = sorted(missing)
            counts: dict[str, int] = {}
            rows = ledger.db.execute("SELECT ident, fate, at, repeats FROM fates").fetchall()
            fate_at = {}
            for ident, fate, at, repeats in rows:
                if ident in self.acked:
                    counts[fate] = counts.get(fate, 0) + 1
                    fate_at[ident] = at
                    self.report.repeats += repeats
            self.report.fates = counts
            self.report.latency_p99_s = _p99_by_window(self.acked, fate_at)
        finally:
            ledger.close()
        return self.report


def _p99_by_window(acked: dict[str, float], fate_at: dict[str, float], window_s: float = 600) -> list:
    """p99 of acknowledgement → recorded fate (Feast written) per window of acknowledgements."""
    if not acked:
        return []
    t0 = min(acked.values())
    windows: dict[int, list[float]] = {}
    for ident, at in acked.items():
        if ident in fate_at:
            windows.setdefault(int((at - t0) // window_s), []).append(max(0.0, fate_at[ident] - at))
    out = []
    for w in sorted(windows):
        lat = sorted(windows[w])
        out.append((w * window_s, lat[min(len(lat) - 1, int(0.99 * len(lat)))]))
    return out
