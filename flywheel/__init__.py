"""Flywheel: a continuous-learning data loop.

This package is the small shared core every stage imports: settings, the feedback
event contract, Kafka helpers and the embedded broker, and the CLI entry point.
It imports no heavy runtime (torch, pyflink, feast, mlflow) at module level.
"""

__version__ = "0.1.0"
