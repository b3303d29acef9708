"""pipelines.fast_record writes exactly what RoutedRecord / DuplicateRecord write.

Differential: cleaned events from the stream benchmark's mix and the hostile corpus (text,
images, accepted predictions, subjects, unicode and control characters), with every
combination of the record's own fields and confidences across the float range (the exponent
forms json and pydantic write differently included), compared character for character.
"""

from __future__ import annotations

import json
import random

from bench.stream_load import payloads, plan
from flywheel.errors import InvalidEventError
from flywheel.events import parse_event
from pipelines.fast_record import duplicate_record_json, routed_record_json
from pipelines.records import DuplicateRecord, Origin, RoutedRecord
from pipelines.transform import clean_event, pseudonymised
from tests.helpers import make_event
from tests.hostile import HOSTILE

SEED = 20261207


def events() -> list:
    raws = [
        v for _, v in payloads(plan("rec", 600, SEED), SEED, ["a text", 'q "x": y \x01 \u2028 \U0001f600'])
    ]
    raws += [c.value for c in HOSTILE if c.value is not None]
    raws += [
        json.dumps(make_event(i, subject_id=f"s{i}", feedback={"accepted": bool(i % 2)})).encode()
        for i in range(10)
    ]
    out = []
    for raw in raws:
        try:
            event = pseudonymised(parse_event(raw), b"k" * 32)
            out.append(clean_event(event)[0])
        except InvalidEventError:
            continue
    return out


EVENTS = events()


def test_routed_records_are_identical():
    rng = random.Random(SEED)
    origins = [Origin("feedback.raw", 0, 0), Origin('t\u00e9st\n"x"', 7, 2**40), Origin("raw", True, 1)]
    checked = 0
    for i, event in enumerate(EVENTS):
        if event.prediction is not None and event.prediction.confidence is not None and i % 3:
            exponent = rng.choice([0, 1, 3, 4, 5, 8, 300, 320])
            confidence = rng.choice([rng.random() * 10**-exponent, -0.0, 0.0, 1.0, 1e-4, 9.99e-5])
            event = event.model_copy(
                update={"prediction": event.prediction.model_copy(update={"confidence": confidence})}
            )
        for low in (False, True):
            for truncated in (False, True):
                origin = origins[rng.randrange(len(origins))]
                masks = rng.choice([0, 1, 17])
                expected = RoutedRecord.of(event, low, masks, origin, truncated).to_json()
                assert routed_record_json(event, low, masks, origin, truncated) == expected
                checked += 1
    assert checked > 2_000


def test_duplicate_records_are_identical():
    for event in EVENTS[:200]:
        for origin in (Origin("feedback.raw", 3, 99), Origin("\u00e9\\", 0, 2**63)):
            assert (
                duplicate_record_json(event.event_id, origin)
                == DuplicateRecord(event.event_id, origin).to_json()
            )
