"""Per-record logic of the stream job, as plain functions (unit-tested without a JVM).

The PyFlink job (``pipelines.stream_job``) only wires these together:

    raw bytes ─ parse_raw ─┬─ invalid ──────────────► dlq_record      → <prefix>.dlq
                           └─ valid ─ clean_event ─ (dedupe by event_id in keyed state)
                                        └─ route ─┬─ review ─► routed_record → <prefix>.review
                                                  └─ clean ──► routed_record → <prefix>.clean
    duplicates ─► duplicate_record → <prefix>.duplicates

Every record that enters ``raw`` leaves through exactly one of those four topics.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from flywheel.errors import InvalidEventError
from flywheel.events import FeedbackEvent, parse_event

REVIEW, CLEAN = "review", "clean"

# ---- PII masking --------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6 = re.compile(
    r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{0,4}\b"
)
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,3}(?!\w)"
)
# Order matters: e-mails and cards first, so the phone pattern does not eat their digits.
_PATTERNS = (("[EMAIL]", _EMAIL), ("[CARD]", _CARD), ("[IP]", _IPV4), ("[IP]", _IPV6), ("[PHONE]", _PHONE))


def mask_pii(text: str) -> tuple[str, int]:
    (
        """Replace e-mails, card-like numbers, IPs and phone numbers; return (text, count).

    Card-like means 13-19 digits, optionally grouped by spaces or dashes; no Luhn check,
    because over-masking is the safe failure for PII.
    """
        ""
    )
    count = 0
    for token, pattern in _PATTERNS:

        def sub(match: re.Match[str], token: str = token) -> str:
            nonlocal count
            if token == "[PHONE]" and sum(c.isdigit() for c in match.group()) < 7:
                return match.group()
            count += 1
            return token

        text = pattern.sub(sub, text)
    return text, count


def normalise_text(text: str) -> str:
    """Unicode NFKC, and runs of whitespace collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


# ---- records ---------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


def parse_raw(value: bytes | None) -> FeedbackEvent:
    """Parse and validate raw bytes with the contract model (raises InvalidEventError)."""
    if value is None:
        raise InvalidEventError("empty", [("", "record has no value (tombstone)")])
    return parse_event(bytes(value))


def clean_event(event: FeedbackEvent) -> tuple[FeedbackEvent, int]:
    """Normalise and mask the free text of an event; return the new event and the mask count."""
    if event.input.text is None:
        return event, 0
    masked, count = mask_pii(normalise_text(event.input.text))
    return event.model_copy(update={"input": event.input.model_copy(update={"text": masked})}), count


def route(event: FeedbackEvent, threshold: float) -> tuple[str, bool]:
    """(destination, low_confidence). No verified answer and confidence < threshold → review."""
    confidence = event.prediction.confidence if event.prediction else None
    low = confidence is not None and confidence < threshold
    return (REVIEW if low and not event.has_verified_answer else CLEAN), low


def routed_record(event: FeedbackEvent, low_confidence: bool, pii_masks: int, origin: Origin) -> str:
    """The JSON written to the clean and review topics."""
    return json.dumps(
        {
            "event": event.to_json_dict(),
            "label": event.verified_label,
            "low_confidence": low_confidence,
            "pii_masks": pii_masks,
            "origin": origin.as_dict(),
        },
        separators=(",", ":"),
    )


def dlq_record(value: bytes | None, key: bytes | None, error: InvalidEventError, origin: Origin) -> str:
    """The JSON written to the dead-letter topic: original bytes, reason, where it came from."""
    return json.dumps(
        {
            "reason": {
                "code": error.code,
                "message": str(error),
                "problems": [{"field": f, "message": m} for f, m in error.problems],
            },
            "origin": origin.as_dict(),
            "key": None if key is None else bytes(key).decode("utf-8", "replace"),
            "raw_b64": None if value is None else base64.b64encode(bytes(value)).decode(),
        },
        separators=(",", ":"),
    )


def duplicate_record(event_id: str, origin: Origin) -> str:
    return json.dumps({"event_id": event_id, "origin": origin.as_dict()}, separators=(",", ":"))


def process_raw(value: bytes | None, key: bytes | None, origin: Origin) -> tuple[str, str, str | None]:
    """First step of the job: ``("dlq", dlq_json, None)`` or ``("valid", event_json, event_id)``.

    A valid event comes back already normalised and PII-masked, with its mask count,
    so what is keyed and stored downstream never holds raw PII.
    """
    try:
        event = parse_raw(value)
    except InvalidEventError as exc:
        return "dlq", dlq_record(value, key, exc, origin), None
    event, masks = clean_event(event)
    payload = json.dumps(
        {"event": event.to_json_dict(), "pii_masks": masks, "origin": origin.as_dict()},
        separators=(",", ":"),
    )
    return "valid", payload, event.event_id


def route_valid(payload: str, thresholds: dict[str, float], default_threshold: float) -> tuple[str, str]:
    """Second step, after dedupe: ``(REVIEW|CLEAN, routed_json)`` for a payload of process_raw."""
    data = json.loads(payload)
    event = FeedbackEvent.model_validate(data["event"])
    destination, low = route(event, thresholds.get(event.model_name, default_threshold))
    return destination, routed_record(event, low, data["pii_masks"], Origin(**data["origin"]))
