"""Small builders shared by the tests."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

from flywheel.events import feedback_event


def png_b64(width: int = 16, height: int = 16) -> str:
    """A real, tiny grey PNG, base64-encoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


def small_training(settings, **update):
    """``settings`` with a training configuration small enough for integration tests on 2 cores."""
    t = settings.training.model_copy(
        update={
            "epochs": 2,
            "min_steps": 20,
            "batch_size": 16,
            "learning_rate": 2e-3,
            "max_old_holdout": 60,
            **update,
        }
    )
    return settings.model_copy(update={"training": t})


def make_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid text-classification event; ``overrides`` replace top-level fields."""
    event = feedback_event(
        f"evt-{i:06d}",
        "sentiment",
        text=f"sample text number {i}",
        prediction={"label": "positive", "confidence": 0.9},
        feedback={"label": "positive"},
        label_source="user",
        source="tests",
        model_version="1",
        event_time="2026-11-01T12:00:00Z",
    )
    event.update(overrides)
    return event


def mixed_traffic(n: int, seed: int = 0) -> tuple[list[bytes], dict[str, int]]:
    """Raw values for the stream job: 10 % malformed (several kinds), 5 % duplicates,
    20 % low-confidence unlabelled, the rest labelled; returns (values, expected counts)."""
    import json
    import random

    rng = random.Random(seed)
    malformed = [
        b"\xff\xfe not utf-8",
        b"{not json",
        b'{"schema_version": 1}',
        b"[]",
        json.dumps(make_event(0, prediction={"label": "x", "confidence": 5})).encode(),
    ]
    values: list[bytes] = []
    expected = {"clean": 0, "review": 0, "dlq": 0, "duplicates": 0}
    originals: list[bytes] = []
    for i in range(n):
        r = i % 20
        if r in (0, 1):  # 10 % malformed
            values.append(malformed[expected["dlq"] % len(malformed)])
            expected["dlq"] += 1
        elif r == 2 and originals:  # 5 % duplicates of an earlier valid event
            values.append(rng.choice(originals))
            expected["duplicates"] += 1
        else:
            text = f"event {i}: write to user{i}@example.com or call +1 415 555 {i % 10000:04d}"
            if r < 7:  # 20 % low confidence, no label → review
                event = make_event(
                    i,
                    input={"text": text},
                    feedback=None,
                    prediction={"label": "negative", "confidence": 0.1 + (r % 3) * 0.1},
                )
                expected["review"] += 1
            else:
                event = make_event(
                    i,
                    input={"text": text},
                    prediction={"label": "positive", "confidence": 0.3 + (r % 7) * 0.1},
                )
                expected["clean"] += 1
            values.append(json.dumps(event).encode())
            originals.append(values[-1])
    return values, expected


def tiny_text_spec(layers: int = 2, max_length: int = 16):
    """The text-classification spec on a randomly initialised, tiny BERT (no checkpoint read)."""
    from transformers import BertConfig

    from flywheel.tasks import get_task

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return get_task("text-classification", max_length=max_length, config=config)
