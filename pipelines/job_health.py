"""Health of the running stream job, as its own process sees it through Flink's REST API.

``flywheel stream run`` starts the job with a bounded exponential-delay restart strategy
(``stream.restart_*``) and a monitor thread that polls the MiniCluster's REST endpoint
and writes ``<state_dir>/run/stream-job.json`` (this module is its only writer and
reader): the job's state, how many times Flink restarted it, and the last exception.
``flywheel status`` and the supervisor read it, so a job that keeps failing is shown as
such instead of as "running".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.files import write_json_atomic
from flywheel.layout import StateLayout

STALE_AFTER_S = 30.0
_PY_ERROR = re.compile(r"^(\w+(?:Error|Exception|Exit)): (.*)$", re.M)
_CAUSED_BY = re.compile(r"^Caused by: (.*)$", re.M)
_WRAPPERS = ("java.util.concurrent.", "org.apache.flink.runtime.JobException: Recovery is suppressed")


@dataclass
class JobHealth:
    pid: int
    job_id: str | None = None
    state: str = "STARTING"  # Flink's job state: RUNNING, RESTARTING, FAILED, FINISHED, ...
    restarts: int = 0
    last_exception: str | None = None
    last_exception_at: float | None = None
    python_mode: str | None = None  # where the Python step runs, as it reported: thread | process
    updated: float = 0.0

    @property
    def stale(self) -> bool:
        """A live job that has not reported for a while (an ended job's report is final)."""
        return self.state not in ("FAILED", "FINISHED") and time.time() - self.updated >= STALE_AFTER_S

    @property
    def healthy(self) -> bool:
        return self.state in ("RUNNING", "FINISHED") and not self.stale

    def describe(self) -> str:
        """One line for `flywheel status`: state, restarts, last exception."""
        if self.stale:
            return (
                f"no job report for {time.time() - self.updated:.0f}s (job process {self.pid} stuck or gone)"
            )
        text = f"job {self.state.lower()}"
        if self.python_mode:
            text += f", Python step in {self.python_mode} mode"
        if self.restarts:
            text += f", {self.restarts} job restart{'s' if self.restarts != 1 else ''}"
        if self.last_exception:
            age = time.time() - (self.last_exception_at or self.updated)
            text += f"; last exception {age:.0f}s ago: {self.last_exception}"
        return text


def health_path(state_dir: Path | str) -> Path:
    return StateLayout.of(state_dir).stream_job_health


def write(state_dir: Path | str, health: JobHealth) -> None:
    health.updated = time.time()
    write_json_atomic(health_path(state_dir), asdict(health), durable=False)


def read(state_dir: Path | str) -> JobHealth | None:
    """The last report of the stream job, or None if there is none (or it is unreadable)."""
    try:
        return JobHealth(**json.loads(health_path(state_dir).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None  # a torn or foreign file: treated as no report, and rewritten in 2 s


def summarise_exception(name: str, stacktrace: str) -> str:
    """The most telling line of a Flink failure: the innermost Python error, else the root
    cause (last ``Caused by:`` that is not a wrapper), else the first line."""
    text = stacktrace or ""
    found = _PY_ERROR.findall(text)
    if found:
        kind, message = found[-1]
        return f"{kind}: {message}"[:500]
    causes = [c for c in _CAUSED_BY.findall(text) if not c.startswith(_WRAPPERS)]
    if causes:
        return causes[-1].strip()[:500]
    lines = text.strip().splitlines()
    return (lines[0] if lines else name)[:500]


_SUPPRESSED = re.compile(r"Recovery is suppressed by \w+\([^)]*currentRestartAttempt=(\d+)")


def restarts_in_failure(text: str) -> int:
    """The restarts a failed job went through, as its final exception says them (Flink's
    exponential-delay strategy names the attempt it refused): exact even when the job failed
    again faster than the REST API was polled."""
    found = _SUPPRESSED.findall(text or "")
    return max(int(found[-1]) - 1, 0) if found else 0


def report_python_step(path: str) -> None:
    """Called by the job's Python step as it opens: which executable runs it. In thread mode
    that is the JVM (``java``); Flink falls back to process mode (a Python worker) silently."""
    exe = os.path.basename(os.path.realpath("/proc/self/exe")) if os.path.exists("/proc/self/exe") else ""
    mode = "thread" if exe.startswith("java") else "process"
    write_json_atomic(Path(path), {"pid": os.getpid(), "executable": exe, "mode": mode}, durable=False)


def python_step_mode(state_dir: Path | str) -> str | None:
    try:
        return json.loads(StateLayout.of(state_dir).stream_python_step.read_text()).get("mode")
    except (FileNotFoundError, ValueError, AttributeError):
        return None


class JobMonitor(threading.Thread):
    """Polls ``/jobs/<id>`` every ``interval_s`` and writes the health file."""

    def __init__(self, state_dir: Path | str, rest_url: str, job_id: str, interval_s: float = 2.0):
        super().__init__(name="stream-job-monitor", daemon=True)
        self.state_dir, self.rest_url, self.interval_s = state_dir, rest_url.rstrip("/"), interval_s
        self.health = JobHealth(pid=os.getpid(), job_id=job_id)
        self.stopped = threading.Event()

    def _get(self, path: str):
        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def poll(self) -> None:
        self.health.python_mode = self.health.python_mode or python_step_mode(self.state_dir)
        job = self.health.job_id
        self.health.state = self._get(f"/jobs/{job}")["state"]
        metrics = self._get(f"/jobs/{job}/metrics?get=numRestarts")
        if metrics:  # refreshed by Flink's metric fetcher only once a second: it may lag a restart
            self.health.restarts = max(self.health.restarts, int(float(metrics[0]["value"])))
        entries = self._get(f"/jobs/{job}/exceptions?maxExceptions=50").get("exceptionHistory", {})
        entries = entries.get("entries") or []
        # every failure in the history was followed by a restart, except a failed job's last one
        failures = len(entries) - (1 if self.health.state == "FAILED" else 0)
        self.health.restarts = max(self.health.restarts, failures)
        if entries:
            latest = entries[0]
            self.health.last_exception = summarise_exception(
                latest.get("exceptionName", ""), latest.get("stacktrace", "")
            )
            self.health.last_exception_at = latest.get("timestamp", 0) / 1000 or None

    def finish(self, state: str, exception: str | None = None, failure: str = "") -> None:
        """The job ended (FINISHED, or FAILED once restarts are used up): record it, after a last
        poll while the REST endpoint may still answer (the count polled last can be a restart
        behind: a failure report once said 1 restart of 2)."""
        self.stopped.set()
        with contextlib.suppress(OSError, ValueError, KeyError, urllib.error.URLError):
            self.poll()
        self.health.state = state
        self.health.restarts = max(self.health.restarts, restarts_in_failure(failure))
        if exception:
            self.health.last_exception, self.health.last_exception_at = exception[:500], time.time()
        write(self.state_dir, self.health)

    def run(self) -> None:
        write(self.state_dir, self.health)  # STARTING
        while not self.stopped.wait(self.interval_s):
            try:
                self.poll()
            except (OSError, ValueError, KeyError, urllib.error.URLError):
                continue  # REST not answering: no new report, so the file ages and says so
            if not self.stopped.is_set():
                write(self.state_dir, self.health)
