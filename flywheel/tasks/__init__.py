"""Task specs: everything task-specific, one spec per task (see ``flywheel.tasks.base``).

Each task is a folder split by facet: ``data`` (samples, Feast columns, the data gate's
checks), ``model`` (the learner: model, baseline, losses, metrics; ``network`` holds its
torch modules), ``serving``, ``review`` (review note, label screen, review queue) and
``policy`` (the gate's defaults); ``spec`` assembles the facets and registers the spec.
``spec_for(settings, task)`` builds the spec of a task from the settings; ``tasks()`` names
the registered ones. Importing this package is cheap: models and losses import torch inside
their methods.
"""

from __future__ import annotations

from flywheel.tasks import image as _image  # each task package registers its spec
from flywheel.tasks import text as _text
from flywheel.tasks.base import BASELINE_FILE, TaskSpec
from flywheel.tasks.registry import (
    all_feast_fields,
    all_image_columns,
    get_task,
    register,
    spec_class,
    spec_for,
    tasks,
)

__all__ = [
    "BASELINE_FILE",
    "TaskSpec",
    "all_feast_fields",
    "all_image_columns",
    "get_task",
    "register",
    "spec_class",
    "spec_for",
    "tasks",
]
del _image, _text
