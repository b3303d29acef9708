"""Orchestration: readiness trigger, the retrain flow, the MLflow gate and rollback,
the Airflow DAG, the cron entry and the demo. Imports the stages; nothing imports it."""
