"""Strict JSON for everything that comes off the wire (the event contract, HTTP bodies).

``loads_json`` is ``json.loads`` that also rejects what JSON does not allow or what no
Flywheel message needs: NaN/Infinity, a key given twice in one object, nesting deeper
than MAX_JSON_DEPTH (checked by a linear scan before the recursive parser could raise
RecursionError). Failures are JsonProblem, a ValueError carrying the DLQ reason code.
"""

from __future__ import annotations

import json
import re
from typing import Any

NOT_JSON = "not_json"
DUPLICATE_KEY = "duplicate_key"
TOO_DEEP = "too_deep"
MAX_JSON_DEPTH = 32


class JsonProblem(ValueError):
    """Bytes that are not acceptable JSON; ``code`` is the DLQ reason code."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def _reject_constant(name: str) -> float:
    raise JsonProblem(NOT_JSON, f"{name} is not valid JSON; send a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = ""
        for key, _ in pairs:
            if key in seen:
                dup = key
                break
            seen.add(key)
        raise JsonProblem(DUPLICATE_KEY, f"the key {dup[:80]!r} appears twice in one object; send it once")
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
# A string (to its closing quote, or to the end when unterminated: one match, so linear) or a
# bracket. Strings are skipped whole, so brackets inside them do not count.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _check_depth(text: str) -> None:
    """Reject nesting deeper than MAX_JSON_DEPTH before the recursive parser sees it (linear)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for token in _TOKENS.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JsonProblem(TOO_DEEP, f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        elif bracket in ("]", "}"):
            depth -= 1


def loads_json(raw: str | bytes) -> Any:
    """Strict ``json.loads``: no NaN/Infinity, no duplicate keys, nesting at most MAX_JSON_DEPTH.

    Raises JsonProblem (a ValueError) with a reason code; UnicodeDecodeError for non-UTF-8 bytes.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    _check_depth(text)
    try:
        return _DECODER.decode(text.lstrip(" \t\n\r"))
    except JsonProblem:
        raise
    except RecursionError as exc:
        raise JsonProblem(TOO_DEEP, "JSON is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, and int conversion past Python's digit limit
        raise JsonProblem(NOT_JSON, f"not valid JSON: {exc}") from exc
