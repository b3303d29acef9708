"""The registry of task specs (peft's pattern): ``register`` a spec class by its name;
``spec_class``/``spec_for`` find it. The package ``flywheel.tasks`` imports every spec module
so each registers itself before anyone looks one up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flywheel.errors import FlywheelError
from flywheel.tasks.base import TaskSpec

if TYPE_CHECKING:
    from flywheel.settings import Settings

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


def spec_for(settings: Settings, task: str) -> TaskSpec:
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


def all_image_columns() -> tuple[str, ...]:
    """Every task's Feast columns that name image-store URIs (erasure deletes those images)."""
    return tuple(dict.fromkeys(c for name in tasks() for c in _REGISTRY[name].image_columns))
