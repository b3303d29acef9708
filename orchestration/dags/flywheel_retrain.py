"""Airflow DAG: the retrain flow, one task per stage, calling the same functions as the CLI.

    ready (short-circuit) → validate (dataset + GE gate) → train → evaluate → register_and_gate

Settings come from ``flywheel.yaml`` / ``FLYWHEEL_*`` in the worker's environment; the model
is the DAG param ``model``. ``max_active_runs=1`` keeps one retrain per DAG at a time, and
the retrain lock in the registry guards against cron or ``flywheel run`` at the same time.
The watermark advances only in the last task, so a failed run retries the same data.

Install: point Airflow's ``dags_folder`` at this directory (or copy this file) in an
environment where Flywheel is installed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task


def _settings():
    from flywheel.settings import load_settings

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
        from orchestration.flow import readiness

        r = readiness(_settings(), _model())
        print(
            f"{r.model}: {r.new_samples} new labelled samples (need {r.threshold}); per class {r.per_class}"
        )
        return r.ready

    @task
    def validate() -> dict:
        from datetime import UTC

        from training.run import prepare

        cut = datetime.now(UTC)
        return {"version": prepare(_settings(), _model(), cut=cut), "cut": cut.isoformat()}

    @task
    def train(prepared: dict) -> dict:
        from training.run import fit_version

        fit_version(_settings(), _model(), prepared["version"], progress=False)
        return prepared

    @task
    def evaluate(prepared: dict) -> dict:
        from training.run import evaluate_version

        run = evaluate_version(_settings(), _model(), prepared["version"])
        print(f"forgetting {run.report.get('forgetting')}; golden {run.report['sets']['golden']}")
        return prepared

    @task
    def register_and_gate(evaluated: dict) -> dict:
        from orchestration.flow import complete_run
        from training.run import load_run

        settings = _settings()
        run = load_run(settings, _model(), evaluated["version"])
        outcome = complete_run(settings, run, datetime.fromisoformat(evaluated["cut"]))
        print(f"{outcome.model} v{outcome.version}: {outcome.status} {outcome.reasons}")
        return {"status": outcome.status, "version": outcome.version, "reasons": outcome.reasons}

    prepared = validate()
    ready() >> prepared
    register_and_gate(evaluate(train(prepared)))


dag_object = flywheel_retrain()

if __name__ == "__main__":
    dag_object.test()
