"""The HTTP app's own Prometheus counters (the loop's state is ``orchestration.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

FEEDBACK = Counter(
    "flywheel_http_feedback_events",
    "Feedback events POSTed to /v1/feedback by outcome: accepted (Kafka confirmed), invalid, "
    "forgotten (erased on request), not_delivered",
    ["outcome"],
)
PREDICTIONS = Counter(
    "flywheel_http_predictions",
    "Predictions answered by /v1/predict, by model and version",
    ["model", "version"],
)
