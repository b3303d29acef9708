"""``flywheel run``: the embedded loop, and the supervisor the demo reuses.

Starts the broker (unless ``kafka.bootstrap_servers`` points at a cluster), creates the
topics and the Feast registry, then runs the stream job, the Feast ingestor and the HTTP
feedback endpoint as child processes (each a ``flywheel`` command with the resolved
settings), restarting a crashed part with exponential backoff. ``run_forever`` adds the
periodic readiness check (``retrain --if-ready`` for every model) and stops cleanly on
SIGINT/SIGTERM: children get SIGTERM (then SIGKILL), the broker it started is stopped.

The embedded broker is watched like a part: when it dies it is started again (a new
epoch: its topics come back empty), the topics are created, and the stream job and the
ingestor are restarted at once (the job starts afresh; the ingestor's settler re-delivers
from the edge journal what had no fate). Because tansu keeps every record in memory and
honours no retention, the broker is also *rotated* the same way once its memory passes
``journal.rotate_broker_mb`` (while a settler runs to re-deliver what is unsettled): memory
stays bounded and the cost of a fetch, which grows with what the broker holds, stays flat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from feature_repo.store import apply_definitions
from flywheel.broker import EmbeddedBroker, for_settings, rss_bytes
from flywheel.errors import BrokerError
from flywheel.files import write_json_atomic
from flywheel.kafka import ensure_topics
from flywheel.layout import StateLayout
from flywheel.procs import die_with_parent, hold_instance_lock
from orchestration.flow import retrain
from orchestration.monitor import monitor_once
from pipelines import job_health
from pipelines.http_api import check_exposure
from pipelines.review_api import ReviewWorker
from pipelines.review_queue import ReviewQueue
from pipelines.sdk import FeedbackClient
from pipelines.settler import read_state
from training.model_store import ModelStore

if TYPE_CHECKING:
    from flywheel.settings import Settings

PARTS = {
    "stream": ["stream", "run"],
    "ingest": ["ingest"],
    "http": ["serve"],
}


@dataclass
class Part:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None  # set when the part exited and waits for its restart
    backoff: float = 1.0
    log_path: Path | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(
        self, settings, parts: tuple[str, ...] = ("stream", "ingest", "http"), log: Callable = print
    ):
        self.settings = settings
        self.log = log
        self.parts = [Part(name, PARTS[name]) for name in parts]
        self.stop_event = threading.Event()
        self.broker: EmbeddedBroker | None = None
        self.config_path = StateLayout.of(settings).resolved_config
        self._instance_lock: IO[str] | None = (
            None  # held from start() until stop(): one `flywheel run` per state dir
        )
        self.broker_restarts = 0
        self.broker_rotations = 0
        self.last_recovery_s: float | None = None

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if any(p.name == "http" for p in self.parts):
            check_exposure(self.settings)  # before anything starts: a clear error, not a crash loop
        self._instance_lock = hold_instance_lock(
            StateLayout.of(self.settings).supervisor_lock, "`flywheel run`"
        )
        if self.settings.embedded_broker:
            broker = self.broker = for_settings(self.settings)
            status = broker.start(die_with_parent=True)
            self.log(f"broker: {status.address} ({status.detail})")
        ensure_topics(self.settings)
        apply_definitions(self.settings)
        self.settings.write_resolved(self.config_path)
        for part in self.parts:
            self._spawn(part)

    def _spawn(self, part: Part) -> None:
        logs = StateLayout.of(self.settings).logs
        logs.mkdir(parents=True, exist_ok=True)
        part.log_path = logs / f"{part.name}.log"
        cmd = [sys.executable, "-m", "flywheel.cli", "--config", str(self.config_path), *part.args]
        env = {**os.environ, "FLINK_LOG_DIR": str(StateLayout.of(self.settings).flink_logs)}
        env = {k: v for k, v in env.items() if not k.startswith("FLYWHEEL_") or k == "FLYWHEEL_JARS_DIR"}
        with open(part.log_path, "ab") as out:
            part.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() signals the whole group
                preexec_fn=die_with_parent,  # and it dies with us, even if we are killed -9
                cwd=Path(__file__).resolve().parents[1],
            )
        part.started_at = time.monotonic()
        self.log(f"{part.name}: started (pid {part.process.pid}, log {part.log_path})")

    def poll(self) -> None:
        """Restart parts that exited, with exponential backoff (capped by run.restart_backoff_max_s)."""
        now = time.monotonic()
        for part in self.parts:
            if part.process is None:
                continue
            if part.running:
                if now - part.started_at > 60:
                    part.backoff = 1.0  # stable for a minute: forget earlier crashes
                continue
            if part.restart_at is None:
                part.restart_at = now + part.backoff
                self.log(
                    f"{part.name}: exited with code {part.process.returncode}; restarting in "
                    f"{part.backoff:.0f}s (see {part.log_path}){self._last_words(part)}"
                )
                part.backoff = min(part.backoff * 2, self.settings.run.restart_backoff_max_s)
            elif now >= part.restart_at:
                part.restarts += 1
                part.restart_at = None
                self._spawn(part)

    # ---- the embedded broker -------------------------------------------------------

    def watch_broker(self) -> None:
        """Restart a dead embedded broker; rotate one that holds too much (see the module
        docstring). Either way the stream job and the ingestor are restarted at once."""
        if self.broker is None or self.stop_event.is_set():
            return

        status = self.broker.status()
        if not status.running:
            self.log(f"broker: {status.detail}; starting it again (its topics come back empty)")
            self._restart_broker()
            self.broker_restarts += 1
            return
        limit = self.settings.journal.rotate_broker_mb
        rss = rss_bytes(status.pid) if status.pid else None
        if limit is None or rss is None or rss < limit * 1024 * 1024:
            return

        last = read_state(self.settings).last
        if time.time() - last.get("time", 0) < 60:  # a settler runs: it re-delivers what is unsettled
            unsettled = last.get("unsettled", 0)
            held = f"{rss / 2**20:.0f} MB resident"
            self.log(f"broker: {held}; rotating it ({unsettled} unsettled record(s) to re-deliver)")
            self.broker.stop()
            self._restart_broker()
            self.broker_rotations += 1

    def _restart_broker(self) -> None:
        if self.broker is None:
            return  # an external broker: not ours to restart
        started = time.monotonic()
        try:
            status = self.broker.start(self.settings.broker.start_timeout_s, die_with_parent=True)
            ensure_topics(self.settings)
        except BrokerError as exc:
            self.log(f"broker: could not start it ({exc}); trying again")
            return
        for part in self.parts:
            proc = part.process
            if part.name in ("stream", "ingest") and proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                part.restart_at, part.backoff = None, 1.0
                part.restarts += 1
                self._spawn(part)
        self.last_recovery_s = time.monotonic() - started
        self.log(f"broker: up again at {status.address}, topics created, in {self.last_recovery_s:.1f}s")

    def stop(self, timeout_s: float = 20.0) -> None:
        self.stop_event.set()
        for part in self.parts:
            if part.process is not None and part.process.poll() is None:
                os.killpg(part.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for part in self.parts:
            proc = part.process
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.log(f"{part.name}: stopped")
        if self.broker is not None:
            self.broker.stop()
            self.log("broker: stopped")
        if self._instance_lock is not None:
            self._instance_lock.close()
            self._instance_lock = None

    def _last_words(self, part: Part) -> str:
        """For the stream part: the job's last exception, as the job reported it."""
        if part.name != "stream":
            return ""

        health = job_health.read(self.settings.state_dir)
        return f"; {health.describe()}" if health is not None and health.last_exception else ""

    def health(self) -> dict[str, dict]:
        return {
            p.name: {
                "running": p.running,
                "restarts": p.restarts,
                "pid": p.process.pid if p.process is not None and p.running else None,
            }
            for p in self.parts
        }

    def write_health(self) -> None:
        """``<state_dir>/run/health.json``, read by `flywheel status` through :func:`read_health`."""
        state = {
            "time": time.time(),
            "supervisor_pid": os.getpid(),
            "parts": self.health(),
            "broker": {
                "restarts": self.broker_restarts,
                "rotations": self.broker_rotations,
                "last_recovery_s": self.last_recovery_s,
            },
        }
        write_json_atomic(StateLayout.of(self.settings).health, state, durable=False)

    # ---- the loop ------------------------------------------------------------------

    def run_forever(self, checks: Sequence[Periodic] = ()) -> None:
        """Supervise until SIGINT/SIGTERM; start each check every its own interval.

        A check (a retrain can take minutes) runs in a worker thread of its own, one run at
        a time, so crashed parts are still restarted while a model trains and the live
        monitor keeps watching. On shutdown the checks see the stop event and end at their
        next step boundary (a registered version is still decided); the supervisor waits for
        them before stopping the parts, so no alias move is cut in half.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        next_run = {c.name: time.monotonic() + c.interval_s for c in checks}
        workers: dict[str, threading.Thread] = {}

        def guarded(check: Periodic) -> None:
            try:
                check.run(self.stop_event)
            except Exception as exc:  # noqa: BLE001 - reported, and retried next interval
                self.log(f"{check.name} failed: {type(exc).__name__}: {exc}")

        try:
            while not self.stop_event.is_set():
                self.watch_broker()
                self.poll()
                self.write_health()
                for check in checks:
                    busy = check.name in workers and workers[check.name].is_alive()
                    if not busy and time.monotonic() >= next_run[check.name]:
                        workers[check.name] = threading.Thread(
                            target=guarded, args=(check,), name=check.name, daemon=True
                        )
                        workers[check.name].start()
                        next_run[check.name] = time.monotonic() + check.interval_s
                self.stop_event.wait(0.5)
        finally:
            for name, worker in workers.items():
                if worker.is_alive():
                    self.log(f"waiting for the {name} to stop at a step boundary")
                    worker.join()
            self.stop()


@dataclass(frozen=True)
class Periodic:
    """A check ``flywheel run`` starts every ``interval_s`` (the readiness check, the monitor)."""

    name: str
    interval_s: float
    run: Callable[[threading.Event], None]


@dataclass
class PartHealth:
    running: bool
    restarts: int
    pid: int | None = None


@dataclass
class RunHealth:
    """What ``flywheel run`` last reported: its pid and each part's state."""

    supervisor_pid: int | None
    parts: dict[str, PartHealth]
    time: float = 0.0
    broker: dict = field(default_factory=dict)  # restarts, rotations, last_recovery_s


def read_health(settings: Settings) -> RunHealth | None:
    """The report ``Supervisor.write_health`` keeps; None if there is none or it is unreadable
    (it is rewritten every half second without fsync: a power cut may leave it empty)."""

    path = StateLayout.of(settings).health
    try:
        data = json.loads(path.read_text())
        parts = {name: PartHealth(**h) for name, h in data["parts"].items()}
        return RunHealth(data.get("supervisor_pid"), parts, data.get("time", 0.0), data.get("broker", {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def readiness_check(settings: Settings, log: Callable = print) -> Periodic:
    """Retrain every model that is ready (the same function as `flywheel model retrain --if-ready`)."""

    def check(stop: threading.Event) -> None:
        from orchestration.metrics import RETRAINS

        for model in ModelStore(settings.state_dir).names():
            if stop.is_set():
                return
            started = time.monotonic()
            outcome = retrain(settings, model, if_ready=True, progress=False, stop=stop)  # never raises
            RETRAINS.labels(model, outcome.status).observe(time.monotonic() - started)
            log(f"readiness check {model}: {outcome.status} {'; '.join(outcome.reasons)}")

    return Periodic("readiness check", settings.run.check_interval_s, check)


def live_monitor(settings: Settings, log: Callable = print) -> Periodic:
    """The live monitor (the same function as `flywheel model monitor --once`)."""

    def check(stop: threading.Event) -> None:
        if not stop.is_set():
            monitor_once(settings, log=log)

    return Periodic("live monitor", settings.monitor.interval_s, check)


def review_queue(settings: Settings, log: Callable = print) -> Periodic:
    """The review queue's worker when no HTTP app runs it (the same step as `flywheel review sync`)."""
    clients: list = []

    def check(stop: threading.Event) -> None:
        if not clients:
            clients.append(FeedbackClient(settings))
        queue = ReviewQueue(settings)  # each run is a new thread: its own connection, closed here
        try:
            if not stop.is_set():
                added, sent = ReviewWorker(settings, queue, lambda: clients[0]).once()
                if added or sent:
                    log(f"review queue: {added} new item(s), {sent} agreed answer(s) sent")
        finally:
            queue.close()

    return Periodic("review queue", settings.review.sync_interval_s, check)
