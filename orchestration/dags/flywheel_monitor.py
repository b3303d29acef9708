"""Airflow DAG: the live monitor, through the same function as `flywheel model monitor --once` and
``flywheel run``.

Every five minutes, for every model: is a promoted champion worse on live traffic than the
champion it replaced? If the data show it with confidence, it is rolled back to ``previous``
(recorded as ``auto-rollback`` with its evidence, alert logged and sent to
``monitor.webhook_url``). The task fails when a rollback was needed but refused (for example
the previous version no longer loads), so Airflow's own alerting sees it too.

Settings come from ``flywheel.yaml`` / ``FLYWHEEL_*`` in the worker's environment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from flywheel.settings import load_settings
from orchestration.monitor import monitor_once


@dag(
    dag_id="flywheel_monitor",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["flywheel"],
    doc_md=__doc__,
)
def flywheel_monitor():
    @task
    def monitor() -> list[dict]:
        results = monitor_once(load_settings(), log=print)
        failed = [r for r in results if r.state == "failed"]
        if failed:
            raise RuntimeError("; ".join(f"{r.model}: {r.message}" for r in failed))
        return [{"model": r.model, "state": r.state, "message": r.message} for r in results]

    monitor()


dag_object = flywheel_monitor()

if __name__ == "__main__":
    dag_object.test()
