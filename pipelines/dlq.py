"""The dead-letter record: why a raw record was refused, where it came from, and a
PII-masked copy of its bytes (people read the DLQ).

``dlq_record`` builds it from the contract's error (``pipelines.transform`` calls it for
every refused record); ``DlqRecord`` parses it back (``from_json`` raises
``pipelines.records.RecordError``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from flywheel.errors import InvalidEventError
from flywheel.events import MAX_RECORD_BYTES
from pipelines.pii import mask_pii
from pipelines.records import Origin, RecordError, compact_json, field_of, parse_record

DEFAULT_DLQ_RAW_BYTES = 64 * 1024  # settings.stream.dlq_max_raw_bytes (at most 128 KiB)
_MAX_PROBLEMS, _MAX_FIELD_CHARS, MAX_MESSAGE_CHARS = 20, 200, 500  # a DLQ reason's caps


def _encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates from a hostile JSON key
    quoted back in a reason) replaced, so the Kafka sink can always serialise it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": " ", "f": " ", "n": "\n", "r": "\r", "t": "\t"}
_MASK_MARGIN = 512  # characters masked past a cut, so PII straddling it is masked whole


def _unescape(text: str) -> str:
    """JSON escapes decoded (``\\n`` → newline, ``\\u00a0`` → NBSP), so PII written through
    escapes is seen by the masker as the reader of the JSON would see it."""

    def decode(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return _SIMPLE_ESCAPES[m.group(2)]
        char = chr(int(m.group(1), 16))
        return "\ufffd" if "\ud800" <= char <= "\udfff" else char

    return _JSON_ESCAPE.sub(decode, text) if "\\" in text else text


_SUBJECT = re.compile(r'("subject_id"\s*:\s*)"[^"]*"?')


def masked_prefix(text: str, max_chars: int) -> tuple[str, int]:
    """(the first ``max_chars`` of ``text`` PII-masked, masks): JSON escapes decoded, and
    masked with a margin past the cut, so PII straddling the cut is masked whole. A
    ``subject_id`` value is masked whole (``[SUBJECT]``): a refused event never reaches the
    pseudonym step, and its subject must not outlive an erasure in the DLQ."""
    masked, masks = mask_pii(_unescape(text[: max_chars + _MASK_MARGIN]))
    masked, subjects = _SUBJECT.subn(r'\1"[SUBJECT]"', masked)
    return masked[:max_chars], masks + subjects


def masked_head(data: bytes, max_chars: int) -> tuple[str, bool, int]:
    """(PII-masked text of the head of ``data``, whether it is valid UTF-8, masks); invalid
    bytes appear as ``\\xNN``."""
    head = data[: max_chars + _MASK_MARGIN]
    try:
        text, utf8 = head.decode("utf-8"), True
    except UnicodeDecodeError as exc:
        # a cut through a multi-byte character does not make the bytes non-UTF-8
        cut = len(data) > len(head) and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
        text, utf8 = head.decode("utf-8", "backslashreplace"), cut
    masked, masks = masked_prefix(text, max_chars)
    return masked, utf8, masks


@dataclass(frozen=True)
class RawCopy:
    """What the DLQ keeps of the raw bytes: size, sha256, and a PII-masked text of the head
    (only ``size`` when even building the DLQ record failed)."""

    size: int
    sha256: str | None = None
    truncated: bool | None = None
    utf8: bool | None = None
    pii_masks: int | None = None
    text: str | None = None

    @classmethod
    def of(cls, value: bytes, max_bytes: int) -> RawCopy:
        text, utf8, masks = masked_head(value, max_bytes)
        digest = hashlib.sha256(value).hexdigest()
        return cls(len(value), digest, len(value) > max_bytes, utf8, masks, text)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RawCopy:
        return cls(
            field_of(data, "raw.size", "an integer"),
            field_of(data, "raw.sha256", "a string", optional=True),
            field_of(data, "raw.truncated", "true or false", optional=True),
            field_of(data, "raw.utf8", "true or false", optional=True),
            field_of(data, "raw.pii_masks", "an integer", optional=True),
            field_of(data, "raw.text", "a string", optional=True),
        )


@dataclass(frozen=True)
class DlqRecord:
    """What the stream job writes to the dead-letter topic (one owner: this class): the reason
    (``code``, ``message``, ``problems`` as (field, message) pairs), the origin, the record's
    key and a copy of its raw bytes."""

    code: str
    message: str
    origin: Origin
    problems: tuple[tuple[str, str], ...] = ()
    problems_total: int = 0
    key: str | None = None
    raw: RawCopy | None = None

    def to_json(self) -> str:
        reason = {
            "code": self.code,
            "message": self.message,
            "problems": [{"field": f, "message": m} for f, m in self.problems],
            "problems_total": self.problems_total,
        }
        raw = None if self.raw is None else self.raw.as_dict()
        return _encodable(
            compact_json({"reason": reason, "origin": self.origin.as_dict(), "key": self.key, "raw": raw})
        )

    @classmethod
    def from_json(cls, value: bytes | str) -> DlqRecord:
        """Parse a DLQ record; RecordError saying what is wrong if it is not one."""
        return parse_record(value, "DLQ record", cls._from_data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> DlqRecord:
        reason = field_of(data, "reason", "an object")
        code, message = (
            field_of(reason, "reason.code", "a string"),
            field_of(reason, "reason.message", "a string"),
        )
        problems = []
        for problem in field_of(reason, "reason.problems", "a list"):
            if not isinstance(problem, dict):
                raise RecordError(f"reason.problems holds {type(problem).__name__}, not an object")
            field = field_of(problem, "reason.problems[].field", "a string")
            problems.append((field, field_of(problem, "reason.problems[].message", "a string")))
        raw = field_of(data, "raw", "an object", optional=True)
        return cls(
            code,
            message,
            Origin.from_dict(field_of(data, "origin", "an object")),
            tuple(problems),
            field_of(reason, "reason.problems_total", "an integer"),
            field_of(data, "key", "a string", optional=True),
            None if raw is None else RawCopy.from_dict(raw),
        )


def dlq_record(
    value: bytes | None,
    key: bytes | None,
    error: InvalidEventError,
    origin: Origin,
    max_raw_bytes: int = DEFAULT_DLQ_RAW_BYTES,
) -> str:
    """The JSON written to the dead-letter topic: reason, where it came from, the raw record.

    The raw record is kept as PII-masked text (people read the DLQ), JSON escapes decoded,
    cut to ``max_raw_bytes`` characters with its full size and sha256; non-UTF-8 bytes
    appear as ``\\xNN``. Reasons are masked and capped too, and the record is shrunk until it
    fits MAX_RECORD_BYTES, so the DLQ sink can always write it.
    """

    def masked(text: str, limit: int) -> str:
        return masked_prefix(text, limit)[0]

    record = DlqRecord(
        error.code,
        masked(str(error), MAX_MESSAGE_CHARS * 4),
        origin,
        tuple(
            (masked(f, _MAX_FIELD_CHARS), masked(m, MAX_MESSAGE_CHARS))
            for f, m in error.problems[:_MAX_PROBLEMS]
        ),
        len(error.problems),
        None if key is None else masked_head(bytes(key), 256)[0],
        None if value is None else RawCopy.of(bytes(value), max_raw_bytes),
    )
    text = record.to_json()
    while len(text.encode("utf-8")) > MAX_RECORD_BYTES // 2 and record.raw and record.raw.text:
        raw, raw_text = record.raw, record.raw.text
        record = replace(record, raw=replace(raw, text=raw_text[: len(raw_text) // 2]))  # escapes grew it
        text = record.to_json()
    return text
