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


# ---- reviewers ------------------------------------------------------------------------

REVIEWER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,15}$"
_REVIEWER_ID = re.compile(REVIEWER_ID_PATTERN)
REVIEW_SOURCE_PREFIX = "review:"


def check_reviewer_id(name: str) -> str:
    """Return ``name`` if it is a valid reviewer id; raise InvalidNameError saying why not."""
    if not isinstance(name, str) or not _REVIEWER_ID.fullmatch(name):
        raise InvalidNameError(
            f"reviewer id {str(name)[:40]!r} is not valid: use 1-16 of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def review_source(reviewers: list[str]) -> str:
    """The ``source`` of a review label: who gave it (``review:alice+bob``), in the event and
    in Feast."""
    return REVIEW_SOURCE_PREFIX + "+".join(sorted({check_reviewer_id(r) for r in reviewers}))


def reviewers_of(source: str) -> list[str]:
    """The reviewers a ``review_source`` names (none for any other source)."""
    if not isinstance(source, str) or not source.startswith(REVIEW_SOURCE_PREFIX):
        return []
    return [r for r in source[len(REVIEW_SOURCE_PREFIX) :].split("+") if _REVIEWER_ID.fullmatch(r)]


REVIEW_SUFFIX = ".review"


def is_review_answer(event_id: str) -> bool:
    """Whether ``event_id`` (a sample id in Feast) is an agreed answer of the review queue:
    only the queue may use the suffix (``pipelines.review.review_claims`` refuses it from
    anyone else), so such a sample's label is a reviewers' label."""
    return isinstance(event_id, str) and (event_id.endswith(REVIEW_SUFFIX) or f"{REVIEW_SUFFIX}." in event_id)
