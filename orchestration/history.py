"""Durable history of a model's promotions, rejections and rollbacks (MLflow keeps none).

One JSON line per decision in ``registry/<model>.history.jsonl`` (``flywheel.layout``),
appended and fsynced under the registry lock. Every entry names the ``champion`` after it,
so the last entry agrees with the champion alias; an entry carries the id of the decision
it records, so a repair that replays a decision never writes it twice.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel.layout import StateLayout


def actor() -> str:
    return os.environ.get("FLYWHEEL_ACTOR") or f"{getpass.getuser()}@{os.uname().nodename}"


def record(state_dir: Path, model: str, action: str, **fields) -> dict:
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="microseconds"),  # the monitor splits traffic at it
        "model": model,
        "action": action,
        "actor": actor(),
        **fields,
    }
    path = StateLayout.of(state_dir).history(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, default=str) + "\n"
    with open(path, "ab+") as f:  # appends go to the end whatever the read position
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # a line torn by a crash mid-append: end it before ours
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())
    return entry


def read(state_dir: Path, model: str) -> list[dict]:
    path = StateLayout.of(state_dir).history(model)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-append: the decision's repair rewrites it
    return entries


def has_decision(state_dir: Path, model: str, decision_id: str) -> bool:
    return any(e.get("decision") == decision_id for e in read(state_dir, model)[-50:])


@dataclass(frozen=True)
class Entry:
    """One decision of the history, typed (``read`` gives the JSON data as written)."""

    time: datetime
    action: str
    version: int | None
    previous: int | None
    champion: int | None
    actor: str
    reason: str
    evidence: dict | None = None

    @classmethod
    def of(cls, data: dict) -> Entry | None:
        """None for a line that is not a decision this module wrote."""

        def number(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        try:
            when = datetime.fromisoformat(data["time"])
        except (KeyError, TypeError, ValueError):
            return None
        evidence = data.get("evidence")
        return cls(
            when if when.tzinfo else when.replace(tzinfo=UTC),
            str(data.get("action", "")),
            number("version"),
            number("previous"),
            number("champion"),
            str(data.get("actor", "")),
            str(data.get("reason", "")),
            evidence if isinstance(evidence, dict) else None,
        )


def entries(state_dir: Path, model: str) -> list[Entry]:
    return [e for e in (Entry.of(d) for d in read(state_dir, model)) if e is not None]
