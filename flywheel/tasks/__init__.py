"""Task specs: everything task-specific, one spec per task (see ``flywheel.tasks.base``).

``spec_for(settings, task)`` builds the spec of a task from the settings; ``tasks()`` names
the registered ones. Importing this package is cheap: models and losses import torch inside
their methods.
"""

from __future__ import annotations

from flywheel.tasks import image_restoration as _image  # each spec module registers itself
from flywheel.tasks import text_classification as _text
from flywheel.tasks.base import BASELINE_FILE, TaskSpec
from flywheel.tasks.registry import all_feast_fields, get_task, register, spec_class, spec_for, tasks

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
