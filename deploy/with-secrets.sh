#!/usr/bin/env bash
# Entry point of the Flywheel containers: read the secrets compose mounts under /run/secrets
# into the FLYWHEEL_* settings they belong to, then run the command.
set -euo pipefail
read_secret() {  # read_secret FILE VARIABLE
    if [ -f "/run/secrets/$1" ]; then export "$2=$(cat "/run/secrets/$1")"; fi
}
read_secret api_token FLYWHEEL_HTTP__AUTH_TOKEN
read_secret redis_password FLYWHEEL_FEAST__REDIS_PASSWORD
read_secret mlflow_password FLYWHEEL_MLFLOW__PASSWORD
read_secret feast_registry_uri FLYWHEEL_FEAST__REGISTRY_URI
exec "$@"
