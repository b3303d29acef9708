#!/usr/bin/env bash
# The MLflow tracking server of docker-compose.yml: PostgreSQL store, artifacts served through
# the server, basic auth on (what tests/integration/test_mlflow_server.py runs).
set -euo pipefail
export MLFLOW_AUTH_CONFIG_PATH=/run/secrets/mlflow_auth_ini
MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat /run/secrets/mlflow_flask_key)"
export MLFLOW_FLASK_SERVER_SECRET_KEY
# the store's URI holds the password: from the environment (mlflow reads
# MLFLOW_BACKEND_STORE_URI), never on the command line, where `ps` shows it
MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://flywheel:$(cat /run/secrets/postgres_password)@postgres/mlflow"
export MLFLOW_BACKEND_STORE_URI
exec mlflow server --host 0.0.0.0 --port 5000 \
    --artifacts-destination /mlartifacts --serve-artifacts \
    --app-name basic-auth --workers 2
