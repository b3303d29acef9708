"""Atomic file writes for state that other processes read while it changes (locks:
``flywheel.locks``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, durable: bool = True, **dumps: Any) -> None:
    """Write ``data`` as JSON so readers see the old file or the new one, never a torn one:
    a temp file unique to this process (two writers never share it), then a rename.
    ``durable`` fsyncs first, so the new content also survives a power cut; reports that
    are rewritten every few seconds (health) skip it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, **dumps))
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
