"""Airflow DAG: the retrain flow, through the same function as the CLI, cron and ``flywheel run``.

    ready (short-circuit) → retrain (repair → readiness → dataset → data gate → label screen → fit →
                                     evaluate → register → decide, under the retrain lock)

The retrain runs as one task because the model's retrain lock must be held from the dataset
to the decision: two DAG runs, or a DAG run and a cron ``flywheel model retrain``, then give one
retrain, and the other reports busy. Each step is logged in the task's log.
``max_active_runs=1`` keeps one run of the DAG at a time as well. The watermark advances
only when a run is decided, so a failed run retries the same data.

Settings come from ``flywheel.yaml`` / ``FLYWHEEL_*`` in the worker's environment; the model
is the DAG param ``model``. Install: point Airflow's ``dags_folder`` at this directory (or
copy this file) in an environment where Flywheel is installed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from flywheel.settings import load_settings
from orchestration.flow import readiness
from orchestration.flow import retrain as run_retrain


def _settings():
    return load_settings()


def _model() -> str:
    return get_current_context()["params"]["model"]


@dag(
    dag_id="flywheel_retrain",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={"model": Param("sentiment", type="string", description="registered model name")},
    tags=["flywheel"],
    doc_md=__doc__,
)
def flywheel_retrain():
    @task.short_circuit
    def ready() -> bool:
        r = readiness(_settings(), _model())
        print(
            f"{r.model}: {r.new_samples} new labelled samples (need {r.threshold}); per class {r.per_class}"
        )
        return r.ready

    @task
    def retrain() -> dict:
        outcome = run_retrain(_settings(), _model(), if_ready=True, progress=False, log=print)
        print(f"{outcome.model} v{outcome.version}: {outcome.status} {outcome.reasons}")
        if outcome.status == "failed":
            raise RuntimeError("; ".join(outcome.reasons))
        return {"status": outcome.status, "version": outcome.version, "reasons": outcome.reasons}

    ready() >> retrain()


dag_object = flywheel_retrain()

if __name__ == "__main__":
    dag_object.test()
