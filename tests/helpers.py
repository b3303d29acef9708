"""Small builders shared by the tests."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any


def png_b64(width: int = 2, height: int = 2) -> str:
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


def make_event(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid text-classification event; ``overrides`` replace top-level fields."""
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"evt-{i:06d}",
        "event_time": "2026-11-01T12:00:00Z",
        "source": "tests",
        "model_name": "sentiment",
        "model_version": "1",
        "task": "text-classification",
        "input": {"text": f"sample text number {i}"},
        "prediction": {"label": "positive", "confidence": 0.9},
        "feedback": {"label": "positive"},
        "label_source": "user",
    }
    event.update(overrides)
    return event
