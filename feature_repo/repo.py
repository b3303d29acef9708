"""Module-level Feast objects for the ``feast`` CLI (``cd feature_repo && feast plan``).

Flywheel itself never imports this file; it applies ``definitions.build`` with the paths
from its settings (``flywheel features apply``).
"""

from pathlib import Path

from definitions import build  # the feast CLI puts this directory on sys.path

_objects = build(Path(__file__).parent / "data" / "feedback_samples")
sample = _objects["entity"]
feedback_push = _objects["push_source"]
feedback_samples = _objects["view"]
training = _objects["service"]
