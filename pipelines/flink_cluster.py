"""A standalone Flink cluster from the PyFlink distribution's own scripts, on loopback: the
stream job's production shape (``flywheel stream cluster start|stop|status``,
``flywheel stream submit``, ``flywheel stream stop``).

The cluster lives under ``<state_dir>/flink-cluster/``: a copy of PyFlink's ``conf/`` with
loopback addresses, free ports and our folders (pid files, temp files, logs), and
``cluster.json`` (its REST address). The JobManager and the TaskManagers are started with
``bin/jobmanager.sh`` / ``bin/taskmanager.sh`` from ``FLINK_HOME = <site-packages>/pyflink``;
TaskManagers see the venv (``PYTHONPATH``) so the job's Python step runs in thread mode.
Jobs are submitted with ``bin/flink run -py pipelines/stream_job.py`` and stopped with a
savepoint through the REST API; a resubmission starts from that savepoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from flywheel.broker import free_port
from flywheel.errors import FlywheelError
from flywheel.layout import StateLayout
from pipelines.stream_job import venv_python_path

if TYPE_CHECKING:
    from flywheel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


class ClusterError(FlywheelError):
    pass


@dataclass(frozen=True)
class Cluster:
    rest_port: int
    rpc_port: int
    slots: int

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def folder(settings: Settings) -> Path:
    return StateLayout.of(settings).flink_cluster


def _env(settings: Settings) -> dict[str, str]:
    base = folder(settings)
    return {
        **os.environ,
        "FLINK_HOME": str(flink_home()),
        "FLINK_CONF_DIR": str(base / "conf"),
        "FLINK_LOG_DIR": str(base / "log"),
        "FLINK_LIB_DIR": str(base / "lib"),
        "PYTHONPATH": os.pathsep.join(venv_python_path()),
    }


def _write_conf(
    settings: Settings, cluster: Cluster, address: str = "127.0.0.1", bind: str = "127.0.0.1"
) -> None:
    base = folder(settings)
    conf = base / "conf"
    if conf.exists():
        shutil.rmtree(conf)
    shutil.copytree(flink_home() / "conf", conf)
    for name in ("log", "pids", "tmp"):
        (base / name).mkdir(parents=True, exist_ok=True)
    _link_lib(base / "lib")
    data = yaml.safe_load((conf / "config.yaml").read_text())
    opts = data["env"]["java"]["opts"]["all"]
    data["env"] = {
        "pid": {"dir": str(base / "pids")},
        "java": {"opts": {"all": f"{opts} -Djava.io.tmpdir={base / 'tmp'}"}},
    }
    data["jobmanager"] = {
        "bind-host": bind,
        "rpc": {"address": address, "port": cluster.rpc_port},
        "memory": {"process": {"size": "1024m"}},
        "execution": {"failover-strategy": "region"},
    }
    data["taskmanager"] = {
        "bind-host": bind,
        "host": "127.0.0.1" if bind == "127.0.0.1" else os.environ.get("HOSTNAME", "localhost"),
        "numberOfTaskSlots": cluster.slots,
        "memory": {"process": {"size": "1600m"}},
    }
    data["rest"] = {"address": address, "bind-address": bind, "port": cluster.rest_port}
    data["io"] = {"tmp": {"dirs": str(base / "tmp")}}
    data["python"] = {"executable": sys.executable, "client": {"executable": sys.executable}}
    (conf / "config.yaml").write_text(yaml.safe_dump(data))


def _link_lib(lib: Path) -> None:
    """The cluster's lib/: PyFlink's own plus its Python runtime (``opt/flink-python``, which
    runs the job's Python step on the TaskManagers). The Kafka connector jars are not here:
    they travel with the job (``pipeline.jars``); a copy in both places is two classes of one
    name (ClassCastException at the source)."""
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    home = flink_home()
    jars = [*(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python*.jar")]
    for jar in jars:
        (lib / jar.name).symlink_to(jar)


def _script(settings: Settings, name: str, *args: str) -> None:
    r = subprocess.run(
        ["bash", str(flink_home() / "bin" / name), *args], env=_env(settings), capture_output=True, text=True
    )
    if r.returncode != 0:
        raise ClusterError(
            f"{name} {' '.join(args)} failed ({r.returncode}): {(r.stderr or r.stdout)[-800:]}"
        )


def read(settings: Settings) -> Cluster | None:
    path = folder(settings) / "cluster.json"
    return Cluster(**json.loads(path.read_text())) if path.is_file() else None


def overview(cluster: Cluster, timeout_s: float = 5.0) -> dict | None:

    try:
        return httpx.get(f"{cluster.rest}/overview", timeout=timeout_s).json()
    except (httpx.HTTPError, ValueError):
        return None


def start(settings: Settings, taskmanagers: int = 1, slots: int = 2, timeout_s: float = 120.0) -> Cluster:
    """Start a JobManager and ``taskmanagers`` TaskManagers; wait until all registered."""

    if (known := read(settings)) is not None and overview(known) is not None:
        raise ClusterError(
            f"a Flink cluster already runs at {known.rest}; `flywheel stream cluster stop` it first"
        )
    cluster = Cluster(free_port(), free_port(), slots)
    _write_conf(settings, cluster)
    (folder(settings) / "cluster.json").write_text(json.dumps(asdict(cluster)))
    _script(settings, "jobmanager.sh", "start")
    for _ in range(taskmanagers):
        add_taskmanager(settings)
    wait_for_taskmanagers(cluster, taskmanagers, timeout_s)
    return cluster


def run_node(
    settings: Settings, role: str, address: str, rest_port: int = 8081, rpc_port: int = 6123, slots: int = 2
):
    """Run one node of a cluster in the foreground (a container's process): the JobManager,
    or a TaskManager of the JobManager at ``address``. Never returns."""
    if role not in ("jobmanager", "taskmanager"):
        raise ClusterError(f"role {role!r} is not jobmanager or taskmanager")
    _write_conf(settings, Cluster(rest_port, rpc_port, slots), address=address, bind="0.0.0.0")
    script = str(flink_home() / "bin" / f"{role}.sh")
    os.execve("/bin/bash", ["bash", script, "start-foreground"], _env(settings))


def add_taskmanager(settings: Settings) -> None:
    _script(settings, "taskmanager.sh", "start")


def wait_for_taskmanagers(cluster: Cluster, n: int, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = overview(cluster)
        if info is not None and info.get("taskmanagers", 0) >= n:
            return info
        time.sleep(1)
    raise ClusterError(
        f"the Flink cluster at {cluster.rest} did not show {n} TaskManager(s) within {timeout_s:.0f}s; "
        "see its logs in <state_dir>/flink-cluster/log"
    )


def taskmanager_pids(settings: Settings) -> list[int]:
    pids = folder(settings) / "pids"
    out = []
    for path in pids.glob("*taskexecutor*.pid"):
        out += [int(line) for line in path.read_text().split() if line.isdigit()]
    return out


def stop(settings: Settings) -> None:
    """Stop every TaskManager and the JobManager of this state dir's cluster."""
    _script(settings, "taskmanager.sh", "stop-all")
    _script(settings, "jobmanager.sh", "stop-all")
    (folder(settings) / "cluster.json").unlink(missing_ok=True)


def submit(
    settings: Settings,
    config_path: Path,
    parallelism: int | None = None,
    savepoint: str | None = None,
    rest_address: str | None = None,
) -> str:
    """Submit the stream job (``flink run -py``, detached) to this state dir's cluster, or to
    the JobManager at ``rest_address`` (host:port); return its job id."""
    if rest_address is None:
        cluster = read(settings)
        if cluster is None or overview(cluster) is None:
            raise ClusterError(
                "no Flink cluster runs for this state dir; `flywheel stream cluster start` first"
            )
        rest_address = f"127.0.0.1:{cluster.rest_port}"
    args = [str(flink_home() / "bin" / "flink"), "run", "-d", "-m", rest_address]
    if parallelism:
        args += ["-p", str(parallelism)]
    if savepoint:
        args += ["-s", savepoint]
    args += ["-py", str(ROOT / "pipelines" / "stream_job.py"), "--config", str(config_path), "--submit"]
    r = subprocess.run(args, env=_env(settings), capture_output=True, text=True, cwd=ROOT, timeout=300)
    found = [
        line.split()[-1]
        for line in r.stdout.splitlines()
        if "JobID" in line or "Job has been submitted" in line
    ]
    if r.returncode != 0 or not found:
        raise ClusterError(f"flink run failed ({r.returncode}): {r.stdout[-3000:]} {r.stderr[-1500:]}")
    return found[-1]


def jobs(cluster: Cluster) -> list[dict]:

    return httpx.get(f"{cluster.rest}/jobs/overview", timeout=10).json()["jobs"]


def stop_with_savepoint(settings: Settings, job_id: str, timeout_s: float = 120.0) -> str:
    """Stop ``job_id`` with a savepoint under ``<state_dir>/flink-savepoints``; return its path."""

    cluster = read(settings)
    if cluster is None:
        raise ClusterError("no Flink cluster runs for this state dir")
    target = StateLayout.of(settings).flink_savepoints
    target.mkdir(parents=True, exist_ok=True)
    r = httpx.post(
        f"{cluster.rest}/jobs/{job_id}/stop",
        json={"targetDirectory": target.as_uri(), "drain": False},
        timeout=10,
    )
    r.raise_for_status()
    trigger = r.json()["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.get(f"{cluster.rest}/jobs/{job_id}/savepoints/{trigger}", timeout=10).json()
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            if "location" not in operation:
                raise ClusterError(f"the savepoint of {job_id} failed: {operation.get('failure-cause')}")
            return operation["location"]
        time.sleep(1)
    raise ClusterError(f"the savepoint of {job_id} did not complete within {timeout_s:.0f}s")
