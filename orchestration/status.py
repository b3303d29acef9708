"""`flywheel status`: per model champion, waiting samples, readiness, last runs; part health."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from flywheel.broker import port_open
from flywheel.tasks import spec_class
from orchestration import history
from orchestration.flow import readiness
from orchestration.live_stats import wilson
from orchestration.monitor import judge, watched
from orchestration.registry import CANDIDATE, CHAMPION, PREVIOUS, Registry
from orchestration.supervisor import read_health
from pipelines import flink_cluster, job_health
from pipelines.lag import consumer_lags, topic_ends
from pipelines.live import LedgerError, LiveLedger
from pipelines.settler import durability
from training.model_store import ModelStore

if TYPE_CHECKING:
    from flywheel.settings import Settings


def part_health(settings: Settings) -> dict[str, str]:
    out = {}
    if settings.embedded_broker:
        up = port_open(settings.broker.host, settings.broker.port)
        out["broker"] = f"up at {settings.broker.host}:{settings.broker.port}" if up else "down"
    else:
        out["broker"] = f"external: {settings.kafka.bootstrap_servers}"
    health = read_health(settings)
    if health is None:
        out.update(
            stream="not supervised (no `flywheel run`)", ingest="not supervised", http="not supervised"
        )
    else:
        alive = _pid_alive(health.supervisor_pid)
        for name, h in health.parts.items():
            if not alive:
                out[name] = "stopped (`flywheel run` is not running)"
            else:
                out[name] = ("running" if h.running else "restarting") + f", {h.restarts} restarts"
    if health is not None and (health.broker.get("restarts") or health.broker.get("rotations")):
        b = health.broker
        recovery = b.get("last_recovery_s")
        out["broker"] += f"; restarted {b.get('restarts', 0)}x, rotated {b.get('rotations', 0)}x" + (
            f", last back in {recovery:.1f}s" if recovery is not None else ""
        )

    for i, line in enumerate(durability(settings).lines()):
        out[f"durability {i + 1}" if i else "durability"] = line
    out["lag"] = lag_line(settings)
    job = stream_job_health(settings)
    if job is not None:
        out["stream"] = f"{out['stream']}; {job}"
    cluster = flink_cluster_health(settings)
    if cluster is not None:
        out["flink cluster"] = cluster
    return out


def lag_line(settings: Settings) -> str:
    """Each consumer's records not yet committed past, per topic (``pipelines.lag``)."""

    if settings.embedded_broker and not port_open(settings.broker.host, settings.broker.port):
        return "not read: the embedded broker is down"
    try:
        lags = consumer_lags(settings, topic_ends(settings, timeout_s=3.0))
    except (KafkaException, TimeoutError, ValueError) as exc:
        return f"not read: the broker did not answer ({exc})"
    by: dict[str, list[str]] = {}
    for row in lags:
        by.setdefault(row.consumer, []).append(f"{row.topic} {row.behind:,}")
    return "; ".join(f"{who} behind on {', '.join(parts)}" for who, parts in by.items())


def flink_cluster_health(settings: Settings) -> str | None:
    """This state dir's standalone Flink cluster and its jobs (`flywheel stream cluster`), if any."""

    cluster = flink_cluster.read(settings)
    if cluster is None:
        return None
    info = flink_cluster.overview(cluster, timeout_s=2)
    if info is None:
        return f"DEGRADED: no answer at {cluster.rest} (`flywheel stream cluster status`)"
    jobs = ", ".join(f"{j['name']} {j['state']}" for j in flink_cluster.jobs(cluster)) or "no jobs"
    state = "" if info["taskmanagers"] and "RUNNING" in jobs else "DEGRADED: "
    return (
        f"{state}{cluster.rest}, {info['taskmanagers']} TaskManager(s), "
        f"{info['slots-available']}/{info['slots-total']} slots free; {jobs}"
    )


def stream_job_health(settings: Settings) -> str | None:
    """The stream job's own report (state, Flink restarts, last exception), if it is running.

    A job that is restarting, failed or has stopped reporting is marked DEGRADED.
    """

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


def _version_summary(registry, model: str, version: int | None) -> dict | None:
    """A version's verdict and its candidate metrics (as evaluated when it was registered)."""
    if version is None:
        return None
    mv = registry.client.get_model_version(model, str(version))
    metrics = registry.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return {
        "version": version,
        "verdict": mv.tags.get("flywheel.verdict"),
        "reasons": mv.tags.get("flywheel.reasons"),
        "metrics": {k.replace(".candidate", ""): v for k, v in metrics.items() if ".candidate." in k},
    }


def model_status(settings: Settings, model: str) -> dict:
    """Everything ``flywheel status`` says about a model, as plain JSON-ready data."""

    registry = Registry(settings)
    models = ModelStore(settings.state_dir)
    state = models.state(model)
    task = models.info(model).task
    aliases = {alias: registry.alias_version(model, alias) for alias in (CHAMPION, PREVIOUS, CANDIDATE)}
    entries = history.read(settings.state_dir, model)
    r = readiness(settings, model)
    last = entries[-1].get("champion") if entries else None
    return {
        "model": model,
        "task": task,
        "metric": spec_class(task).primary_metric,
        **{alias: _version_summary(registry, model, v) for alias, v in aliases.items()},
        "local_champion": state.champion,
        "consistent": aliases[CHAMPION] == state.champion and (not entries or last == aliases[CHAMPION]),
        "open_decision": state.decision.to_dict() if state.decision else None,
        "pending_versions": registry.pending(model),
        "watermark": state.watermark,
        "waiting": r.new_samples,
        "threshold": r.threshold,
        "ready": r.ready,
        "per_class": r.per_class,
        "rejected_windows": len(state.rejected_windows),
        "data_rejected_windows": [w.to_dict() for w in state.data_rejected],
        "last_runs": entries[-5:],
        "live": live_status(settings, model, spec_class(task)),
    }


def live_status(settings: Settings, model: str, spec) -> dict:
    """Live metrics per version (verified feedback on served predictions), the monitor's
    current verdict and the last automatic rollback (the alert)."""

    try:
        ledger = LiveLedger.of(settings, readonly=True)
    except LedgerError as exc:
        return {"metric": spec.live_metric, "unit": spec.live_unit, "versions": [], "monitor": str(exc),
                "last_auto_rollback": None}  # fmt: skip
    try:
        versions = []
        for v in ledger.per_version(model):
            row: dict[str, Any] = {
                "version": v.version,
                "n": v.n,
                "mean": v.mean,
                "since": v.first,
                "until": v.last,
            }
            if spec.live_metric == "accuracy":
                row["interval"] = wilson(round(v.mean * v.n), v.n, settings.monitor.confidence)
            versions.append(row)
        entries = history.entries(settings.state_dir, model)
        watch = watched(entries, model)
        verdict = judge(settings, ledger, spec, watch, datetime.now(UTC)).message if watch else None
    finally:
        ledger.close()
    alerts = [e for e in entries if e.action == "auto-rollback"]
    last = alerts[-1] if alerts else None
    return {
        "metric": spec.live_metric,
        "unit": spec.live_unit,
        "versions": versions,
        "monitor": verdict,
        "last_auto_rollback": None
        if last is None
        else {
            "time": last.time.isoformat(),
            "from": last.previous,
            "to": last.version,
            "reason": last.reason,
        },
    }


def status(settings: Settings) -> dict:
    """The whole of ``flywheel status --json``: part health and every model."""

    return {
        "health": part_health(settings),
        "models": [model_status(settings, name) for name in ModelStore(settings.state_dir).names()],
    }
