#!/usr/bin/env bash
# Start, inspect or stop a standalone Flink cluster on loopback, built from the PyFlink
# distribution's own scripts (JobManager + TaskManagers), for this checkout's state dir:
#   bash scripts/flink-cluster.sh start [--taskmanagers 2 --slots 2]
#   bash scripts/flink-cluster.sh status | add-taskmanager | stop
# Then `flywheel stream submit`, and `flywheel stream stop JOB_ID` for a savepoint.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/flywheel stream cluster "$@"
