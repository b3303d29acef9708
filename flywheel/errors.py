"""One base exception for the project.

Messages say what was received and what to do about it. Errors become exit codes
only at the CLI boundary (``flywheel.cli``), via ``FlywheelError.exit_code``.
"""

from __future__ import annotations


class FlywheelError(Exception):
    """Base class of every error Flywheel raises on purpose."""

    exit_code = 1


class ConfigError(FlywheelError):
    """The configuration file or a FLYWHEEL_* variable is invalid."""

    exit_code = 2


class DataError(FlywheelError):
    """A data file (labelled samples, images) that cannot be used."""


class BrokerError(FlywheelError):
    """The Kafka broker cannot be started, stopped or reached."""

    exit_code = 3


class DeliveryError(FlywheelError):
    """Kafka did not confirm delivery of one or more events."""

    exit_code = 4


class InvalidEventError(FlywheelError):
    """An event does not satisfy the feedback contract.

    ``code`` is machine-readable (it is what the dead-letter topic records);
    ``problems`` lists ``(field, message)`` pairs, field in dotted form.
    """

    exit_code = 5

    def __init__(self, code: str, problems: list[tuple[str, str]]):
        self.code = code
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))
