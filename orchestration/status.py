"""`flywheel status`: per model champion, waiting samples, readiness, last runs; part health."""

from __future__ import annotations

import json
import os
from pathlib import Path


def part_health(settings) -> dict[str, str]:
    from flywheel.broker import port_open

    out = {}
    if settings.embedded_broker:
        up = port_open(settings.broker.host, settings.broker.port)
        out["broker"] = f"up at {settings.broker.host}:{settings.broker.port}" if up else "down"
    else:
        out["broker"] = f"external: {settings.kafka.bootstrap_servers}"
    path = Path(settings.state_dir) / "run" / "health.json"
    if not path.is_file():
        out.update(
            stream="not supervised (no `flywheel run`)", ingest="not supervised", http="not supervised"
        )
    else:
        data = json.loads(path.read_text())
        alive = _pid_alive(data.get("supervisor_pid"))
        for name, h in data["parts"].items():
            if not alive:
                out[name] = "stopped (`flywheel run` is not running)"
            else:
                out[name] = ("running" if h["running"] else "restarting") + f", {h['restarts']} restarts"
    job = stream_job_health(settings)
    if job is not None:
        out["stream"] = f"{out['stream']}; {job}"
    return out


def stream_job_health(settings) -> str | None:
    """The stream job's own report (state, Flink restarts, last exception), if it is running.

    A job that is restarting, failed or has stopped reporting is marked DEGRADED.
    """
    from pipelines import job_health

    health = job_health.read(settings.state_dir)
    if health is None or (not _pid_alive(health.pid) and health.state != "FAILED"):
        return None
    return ("" if health.healthy else "DEGRADED: ") + health.describe()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def model_status(settings, model: str) -> dict:
    from orchestration import history
    from orchestration.flow import readiness
    from orchestration.registry import CHAMPION, Registry

    registry = Registry(settings)
    champion = registry.alias_version(model, CHAMPION)
    metrics = {}
    if champion is not None:
        run_id = registry.client.get_model_version(model, str(champion)).run_id
        all_metrics = registry.client.get_run(run_id).data.metrics
        metrics = {k.replace(".candidate", ""): v for k, v in all_metrics.items() if ".candidate." in k}
    r = readiness(settings, model)
    return {
        "model": model,
        "champion": champion,
        "metrics": metrics,
        "waiting": r.new_samples,
        "threshold": r.threshold,
        "ready": r.ready,
        "per_class": r.per_class,
        "last_runs": history.read(settings.state_dir, model)[-5:],
    }
