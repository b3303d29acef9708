"""Task specs: everything task-specific, one spec per task (see ``flywheel.tasks.base``).

``spec_for(settings, task)`` builds the spec of a task from the settings; ``tasks()`` names
the registered ones. Importing this package is cheap: models and losses import torch inside
their methods.
"""

from __future__ import annotations

from typing import Any

from flywheel.errors import FlywheelError
from flywheel.tasks.base import BASELINE_FILE, TaskSpec

_REGISTRY: dict[str, type[TaskSpec]] = {}


def register(cls: type[TaskSpec]) -> type[TaskSpec]:
    _REGISTRY[cls.name] = cls
    return cls


def spec_class(task: str) -> type[TaskSpec]:
    """The spec class of ``task`` (its class-level knowledge: columns, Feast fields)."""
    if task not in _REGISTRY:
        raise FlywheelError(f"unknown task {task!r}; known tasks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[task]


def get_task(task: str, **kwargs: Any) -> TaskSpec:
    """The spec of ``task`` built from explicit arguments (tests, benchmarks)."""
    return spec_class(task)(**kwargs)


def spec_for(settings, task: str) -> TaskSpec:
    """The spec of ``task`` as the settings configure it."""
    return spec_class(task).from_settings(settings)


def tasks() -> list[str]:
    return sorted(_REGISTRY)


def all_feast_fields() -> dict[str, str]:
    """Every task's Feast fields (the feature view holds their union)."""
    fields: dict[str, str] = {}
    for name in tasks():
        fields.update(_REGISTRY[name].feast_fields)
    return fields


from flywheel.tasks import image_restoration as _image  # noqa: E402  (registers itself)
from flywheel.tasks import text_classification as _text  # noqa: E402  (registers itself)

__all__ = [
    "BASELINE_FILE",
    "TaskSpec",
    "all_feast_fields",
    "get_task",
    "register",
    "spec_class",
    "spec_for",
    "tasks",
]
del _image, _text
