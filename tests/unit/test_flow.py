"""The retrain flow's exit codes (the contract cron and Airflow read; documented in the README)."""

from __future__ import annotations

import pytest

from orchestration.flow import EXIT_BUSY, EXIT_FAILED, EXIT_OK, EXIT_REJECTED, Outcome


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("promoted", EXIT_OK),
        ("not-ready", EXIT_OK),
        ("rejected", EXIT_REJECTED),
        ("failed", EXIT_FAILED),
        ("busy", EXIT_BUSY),
    ],
)
def test_each_outcome_has_its_documented_exit_code(status, code):
    assert Outcome("m", status).exit_code == code
    assert (EXIT_OK, EXIT_REJECTED, EXIT_FAILED, EXIT_BUSY) == (0, 10, 11, 12)
