"""Durable history of a model's promotions, rejections and rollbacks (MLflow keeps none).

One JSON line per event in ``<state_dir>/registry/<model>.history.jsonl``, appended and
fsynced under the registry lock.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from flywheel.names import check_model_name


def history_path(state_dir: Path, model: str) -> Path:
    return Path(state_dir) / "registry" / f"{check_model_name(model)}.history.jsonl"


def actor() -> str:
    return os.environ.get("FLYWHEEL_ACTOR") or f"{getpass.getuser()}@{os.uname().nodename}"


def record(state_dir: Path, model: str, action: str, **fields) -> dict:
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model,
        "action": action,
        "actor": actor(),
        **fields,
    }
    path = history_path(state_dir, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def read(state_dir: Path, model: str) -> list[dict]:
    path = history_path(state_dir, model)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
