"""Feast objects for feedback samples (one row per clean feedback event).

``build(offline_dir)`` returns them for a given offline directory. Flywheel applies them
with ``flywheel features apply``; ``repo.py`` exposes them to the ``feast`` CLI.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flywheel.tasks import all_feast_fields

ENTITY = "sample"
JOIN_KEY = "sample_id"
FEATURE_VIEW = "feedback_samples"
PUSH_SOURCE = "feedback_push"
FEATURE_SERVICE = "training"
TIMESTAMP = "event_timestamp"
CREATED = "ingested_at"
SUBJECT = "subject"  # the subject's pseudonym: an offline column, not a feature (flywheel.privacy)

# Feature columns and their Feast type names; the ingestor builds rows with exactly these:
# the fields every event has, then each task's own (its spec's ``feast_fields``: text and
# labels for text; image URIs and hashes for images, whose bytes live in the image store).
COMMON_FEATURES: dict[str, str] = {
    "model_name": "String",
    "model_version": "String",
    "task": "String",
    "source": "String",
    "confidence": "Float64",
    "low_confidence": "Bool",
    "label_source": "String",
    "pii_masks": "Int64",
}
FEATURES: dict[str, str] = {**COMMON_FEATURES, **all_feast_fields()}


def build(offline_dir: str | Path) -> dict:
    """The Feast objects, with the offline batch source reading every parquet under ``offline_dir``."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast import types as ft

    sample = Entity(
        name=ENTITY,
        join_keys=[JOIN_KEY],
        value_type=ValueType.STRING,
        description="one feedback event; sample_id is its event_id",
    )
    # A directory source: the ingestor appends one parquet file per micro-batch, so an
    # offline write never rewrites history (Feast's own offline push rewrites the file).
    batch = FileSource(
        name="feedback_samples_files",
        path=str(offline_dir),
        timestamp_field=TIMESTAMP,
        created_timestamp_column=CREATED,
    )
    push = PushSource(name=PUSH_SOURCE, batch_source=batch)
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[sample],
        ttl=timedelta(0),  # 0 = no TTL: a sample stays valid for training forever
        schema=[Field(name=n, dtype=getattr(ft, t)) for n, t in FEATURES.items()],
        source=push,
        online=True,
        description="clean feedback events: input, verified answer, prediction and provenance",
    )
    service = FeatureService(
        name=FEATURE_SERVICE, features=[view], description="what the training stage reads"
    )
    return {"entity": sample, "batch_source": batch, "push_source": push, "view": view, "service": service}
