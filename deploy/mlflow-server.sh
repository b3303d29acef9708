#!/usr/bin/env bash
# The MLflow tracking server of docker-compose.yml: PostgreSQL store, artifacts served through
# the server, basic auth on (what tests/integration/test_mlflow_server.py runs).
set -euo pipefail
export MLFLOW_AUTH_CONFIG_PATH=/run/secrets/mlflow_auth_ini
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat /run/secrets/mlflow_flask_key)"
export MLFLOW_FLASK_SERVER_SECRET_KEY
password="$(cat /run/secrets/postgres_password)"
exec mlflow server --host 0.0.0.0 --port 5000 \
    --backend-store-uri "postgresql+psycopg2://flywheel:${password}@postgres/mlflow" \
    --artifacts-destination /mlartifacts --serve-artifacts \
    --app-name basic-auth --workers 2
