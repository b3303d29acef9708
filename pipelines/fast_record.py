"""The stream job's output records as JSON text, without the detour through Python dicts.

``routed_record_json(event, ...)`` is ``RoutedRecord.of(event, ...).to_json()`` and
``duplicate_record_json(event_id, origin)`` is ``DuplicateRecord(event_id, origin).to_json()``,
character for character (``pipelines.records`` stays the owner of the records' shape and the
reader of them; ``tests/unit/test_fast_record.py`` holds the two to the same output).

``RoutedRecord.to_json`` dumps ``event.to_json_dict()`` with ``json.dumps`` (compact,
``ensure_ascii=False``): about 9 us per event. Here the event's JSON comes straight from
pydantic's serializer (the same field order, datetime text and string escaping as
``to_json_dict`` + ``json.dumps``: ``"``, ``\\``, the C0 controls as ``\\n``/``\\u0001``,
everything else as itself), and the few record fields around it are written with
``json``'s own string encoder. The one difference between the two encoders is how floats
in exponent form are written (``json``: ``5e-05``; pydantic: ``0.00005``), so an event with
such a float (a confidence below 0.0001) takes ``RoutedRecord`` itself, as does anything
unusual (non-int offsets, a non-bool flag).
"""

from __future__ import annotations

import json.encoder
import math
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel

from flywheel.events import FeedbackEvent
from pipelines.records import DuplicateRecord, Origin, RoutedRecord

__all__ = ["duplicate_record_json", "routed_record_json"]

_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for str
_to_json = FeedbackEvent.__pydantic_serializer__.to_json


def _float_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The attribute paths of every float field of ``model`` (nested models included)."""
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else Any
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _float_paths(annotation, (*prefix, name))
        elif annotation is float or annotation is Any:
            out.append((*prefix, name))
    return out


_FLOAT_PATHS = _float_paths(FeedbackEvent)


def _floats_alike(event: FeedbackEvent) -> bool:
    """Whether every float of ``event`` is written alike by json (``repr``) and pydantic: not
    in exponent form, finite."""
    for path in _FLOAT_PATHS:
        value: Any = event
        for name in path:
            value = getattr(value, name, None)
            if value is None:
                break
        if value is not None and (type(value) is not float or "e" in repr(value) or not math.isfinite(value)):
            return False
    return True


def _origin_json(origin: Origin) -> str | None:
    if type(origin.partition) is not int or type(origin.offset) is not int or type(origin.topic) is not str:
        return None
    return f'{{"topic":{_encode_str(origin.topic)},"partition":{origin.partition},"offset":{origin.offset}}}'


def routed_record_json(
    event: FeedbackEvent,
    low_confidence: bool,
    pii_masks: int,
    origin: Origin,
    text_truncated: bool = False,
) -> str:
    """``RoutedRecord.of(event, low_confidence, pii_masks, origin, text_truncated).to_json()``."""
    origin_json = _origin_json(origin)
    if (
        origin_json is None
        or type(low_confidence) is not bool
        or type(pii_masks) is not int
        or not _floats_alike(event)
        or not isinstance(label := event.verified_label, str | None)
    ):
        return RoutedRecord.of(event, low_confidence, pii_masks, origin, text_truncated).to_json()
    return "".join(
        (
            '{"event":',
            _to_json(event, exclude_none=True).decode(),
            ',"label":',
            "null" if label is None else _encode_str(label),
            ',"low_confidence":true' if low_confidence else ',"low_confidence":false',
            f',"pii_masks":{pii_masks},"origin":',
            origin_json,
            ',"text_truncated":true}' if text_truncated else "}",
        )
    )


def duplicate_record_json(event_id: str, origin: Origin) -> str:
    """``DuplicateRecord(event_id, origin).to_json()``."""
    origin_json = _origin_json(origin)
    if origin_json is None or type(event_id) is not str:
        return DuplicateRecord(event_id, origin).to_json()
    return f'{{"event_id":{_encode_str(event_id)},"origin":{origin_json}}}'
