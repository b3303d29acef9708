"""Named crash points for fault-injection tests of multi-step state changes.

Each step boundary of a change that spans several stores (MLflow aliases and tags, the
model's local state, the history) calls :func:`crash_point`. Normally it does nothing.

* ``FLYWHEEL_CRASH_AT=<name>`` in the environment kills the process there with SIGKILL,
  as a power cut or ``kill -9`` would (the crash drill, subprocess tests).
* :func:`crash_at` makes the point raise :class:`SimulatedCrash` in this process (unit and
  integration tests that then run the repair in the same process).
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

ENV = "FLYWHEEL_CRASH_AT"
_armed: set[str] = set()


class SimulatedCrash(BaseException):
    """Raised at an armed crash point; a BaseException so no ``except Exception`` swallows it."""


def crash_point(name: str) -> None:
    if name in _armed:
        raise SimulatedCrash(name)
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def crash_at(name: str):
    _armed.add(name)
    try:
        yield
    finally:
        _armed.discard(name)
