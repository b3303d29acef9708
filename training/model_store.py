"""A model's local directory: what it predicts, its golden set, its versions and watermark.

    <state_dir>/models/<name>/
        model.json            name, task, labels, base model, created
        golden.parquet        the golden set, fixed at bootstrap: every evaluation uses it
        bootstrap.parquet     the bootstrap data (the first "old" data)
        state.json            champion version, training watermark, runs
        versions/v<N>/        adapter (safetensors) + adapter_config.json, training_config.json,
                              eval.json, gate.json, data.json

The MLflow registry (orchestration) is the authority on which version serves; it writes
the champion here when it moves the alias, so training can find the teacher offline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.files import write_json_atomic
from flywheel.names import check_model_name


class ModelNotFound(FlywheelError):
    pass


@dataclass
class ModelInfo:
    name: str
    task: str
    labels: list[str]
    base_model: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def _write_json(path: Path, data) -> None:
    write_json_atomic(path, data, indent=2, default=str)


class ModelStore:
    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir) / "models"

    def dir(self, name: str) -> Path:
        return self.root / check_model_name(name)

    def exists(self, name: str) -> bool:
        return (self.dir(name) / "model.json").is_file()

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/model.json"))

    def create(self, info: ModelInfo, golden, bootstrap) -> None:
        d = self.dir(info.name)
        if self.exists(info.name):
            raise FlywheelError(f"model {info.name!r} already exists in {d}; choose another name")
        (d / "versions").mkdir(parents=True, exist_ok=True)
        golden.to_parquet(d / "golden.parquet", index=False)
        bootstrap.to_parquet(d / "bootstrap.parquet", index=False)
        _write_json(d / "state.json", {"champion": None, "watermark": None, "versions": []})
        _write_json(d / "model.json", asdict(info))

    def info(self, name: str) -> ModelInfo:
        path = self.dir(name) / "model.json"
        if not path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise ModelNotFound(
                f"no model {name!r} in {self.root} (known: {known}); create it with `flywheel bootstrap`"
            )
        return ModelInfo(**json.loads(path.read_text()))

    def golden(self, name: str):
        import pandas as pd

        return pd.read_parquet(self.dir(name) / "golden.parquet")

    def bootstrap_data(self, name: str):
        import pandas as pd

        return pd.read_parquet(self.dir(name) / "bootstrap.parquet")

    # ---- state ---------------------------------------------------------------------

    def state(self, name: str) -> dict:
        self.info(name)
        return json.loads((self.dir(name) / "state.json").read_text())

    def update_state(self, name: str, **changes) -> dict:
        state = self.state(name)
        state.update(changes)
        _write_json(self.dir(name) / "state.json", state)
        return state

    def champion(self, name: str) -> int | None:
        return self.state(name)["champion"]

    def watermark(self, name: str) -> datetime | None:
        w = self.state(name)["watermark"]
        return datetime.fromisoformat(w) if w else None

    # ---- versions ------------------------------------------------------------------

    def new_version(self, name: str) -> tuple[int, Path]:
        existing = [int(p.name[1:]) for p in (self.dir(name) / "versions").glob("v*") if p.name[1:].isdigit()]
        number = max(existing, default=0) + 1
        path = self.version_dir(name, number)
        path.mkdir(parents=True)
        return number, path

    def version_dir(self, name: str, version: int) -> Path:
        return self.dir(name) / "versions" / f"v{version}"

    def versions(self, name: str) -> list[int]:
        found = (p.parent.name for p in (self.dir(name) / "versions").glob("v*/adapter_config.json"))
        return sorted(int(n[1:]) for n in found if n[1:].isdigit())
