"""What a model predicts (``model.json``): written once at bootstrap, read by every stage.

Its one owner is this module: training creates it (``ModelStore.create``), the review queue
checks a reviewer's label against it, the registry and serving read the task and labels.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flywheel.errors import FlywheelError
from flywheel.files import write_json_atomic
from flywheel.layout import StateLayout


class ModelNotFound(FlywheelError):
    pass


@dataclass
class ModelInfo:
    name: str
    task: str
    labels: list[str]
    base_model: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


def model_names(state_dir: str | Path) -> list[str]:
    return sorted(p.parent.name for p in StateLayout.of(state_dir).models.glob("*/model.json"))


def read_model_info(state_dir: str | Path, name: str) -> ModelInfo:
    layout = StateLayout.of(state_dir)
    path = layout.model_info(name)
    if not path.is_file():
        known = ", ".join(model_names(state_dir)) or "none yet"
        raise ModelNotFound(
            f"no model {name!r} in {layout.models} (known: {known}); "
            "create it with `flywheel model bootstrap`"
        )
    return ModelInfo(**json.loads(path.read_text()))


def write_model_info(state_dir: str | Path, info: ModelInfo) -> None:
    write_json_atomic(StateLayout.of(state_dir).model_info(info.name), asdict(info), indent=2)
