"""The task seam, proved by a third task that lives only in ``tests/toy_task/`` (a tiny tabular
regressor judged by MAE): it registers itself and runs through bootstrap, then readiness,
dataset, data gate, label screen, fit, evaluate, register and decide, on a real Feast store
and a real MLflow registry, with no change to any file outside its folder.

It runs in a fresh interpreter: the Feast schema is the union of the tasks registered when
``feature_repo.definitions`` is first imported, and this test process has imported it long
before (a task is registered at start-up, as ``flywheel.tasks`` registers the built-in ones).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOW = r"""
import json, random, sys
from datetime import UTC, datetime
from pathlib import Path

import tests.toy_task  # registers toy-regression before anything builds the Feast schema

from feature_repo.store import open_store, write_offline_batch
from flywheel.settings import load_settings
from orchestration.flow import bootstrap_model, readiness, retrain
from orchestration.registry import Registry

tmp = Path(sys.argv[1])
settings = load_settings(state_dir=tmp / "state", training={"min_new_samples": 60, "epochs": 4})
rng = random.Random(0)
W = [0.5, -1.0, 2.0, 0.3]

def sample(i, prefix):
    x = [rng.uniform(-1, 1) for _ in W]
    return {"sample_id": f"{prefix}{i}", "x": x, "y": sum(w * v for w, v in zip(W, x)) + rng.gauss(0, 0.05)}

seed = tmp / "seed.jsonl"
seed.write_text("\n".join(json.dumps(sample(i, "s")) for i in range(240)) + "\n")
first = bootstrap_model(settings, "toy", "toy-regression", seed, progress=False)

store = open_store(settings)
now = datetime.now(UTC)
rows = []
for i in range(80):
    s = sample(i, "n")
    rows.append({"sample_id": s["sample_id"], "event_timestamp": now, "ingested_at": now, "model_name": "toy",
                 "task": "toy-regression", "source": "test", "label_source": "user",
                 "toy_x": json.dumps(s["x"]), "toy_y": s["y"]})
write_offline_batch(settings, rows, "toy-window")
ready = readiness(settings, "toy")
second = retrain(settings, "toy", feast_store=store, progress=False) if ready.ready else None
registry = Registry(settings)
print(json.dumps({
    "first": first.status, "first_mae": first.report.value("golden", "candidate", "mae"),
    "baseline_mae": first.report.value("golden", "baseline", "mae"),
    "ready": ready.ready, "new": ready.new_samples,
    "second": second.status if second else None, "second_version": second.version if second else None,
    "second_mae": second.report.value("golden", "candidate", "mae") if second else None,
    "champion": registry.alias_version("toy", "champion"),
    "reasons": second.reasons if second else None,
}))
"""


def test_a_third_task_defined_only_in_tests_runs_the_whole_flow(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", FLOW, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["first"] == "promoted", result
    assert result["first_mae"] < result["baseline_mae"], result  # the MLP beats the mean predictor
    assert result["ready"] and result["new"] == 80, result
    assert result["second"] == "promoted" and result["second_version"] == 2, result
    assert result["champion"] == 2, result
    # lower is better for MAE: the ratchet's best version and its budget follow the task's direction
    assert any("vs reference v1" in r and "left" in r for r in result["reasons"]), result
