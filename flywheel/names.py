"""Names that become file paths and topic keys: one pattern, checked everywhere.

A model name is part of ``<state_dir>/models/<name>``, the registry history file and
the retrain lock, so it may not hold path separators, start with a dot or be ``..``.
"""

from __future__ import annotations

import re

from flywheel.errors import FlywheelError

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


class InvalidNameError(FlywheelError, ValueError):
    """A model name that cannot be used (it would escape its folder or break a path)."""

    exit_code = 2


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name; raise InvalidNameError saying why not."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidNameError(
            f"model name {str(name)[:80]!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no path separators, no leading dot)"
        )
    return name
