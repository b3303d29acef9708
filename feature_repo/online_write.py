"""Rows → the Feast online store, without the DataFrame → Arrow → protobuf round trip of
``FeatureStore.push``.

``push`` converts a micro-batch column by column through Arrow and re-reads the feature
view from the registry on every call; for the ingestor's rows, whose types are fixed by
``definitions.FEATURES``, that costs more than the write itself. ``OnlineWriter`` builds
the same ``ValueProto``s straight from the row dicts (``None`` and NaN become an empty
value, as Feast does) and hands them to the provider's ``online_write_batch`` (Feast's API
for stores), so the online store holds byte for byte what ``push`` would have written:
``tests/unit/test_online_sqlite.py`` checks it for every feature type, nulls included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from feature_repo.definitions import CREATED, FEATURE_VIEW, FEATURES, JOIN_KEY, TIMESTAMP


def _converters() -> dict[str, Callable[[Any], Any]]:
    from feast.protos.feast.types.Value_pb2 import Value

    def scalar(field: str, cast: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def convert(value: Any) -> Any:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return Value()
            return Value(**{field: cast(value)})

        return convert

    by_type = {
        "String": scalar("string_val", str),
        "Float64": scalar("double_val", float),
        "Bool": scalar("bool_val", bool),
        "Int64": scalar("int64_val", int),
    }
    return {name: by_type[kind] for name, kind in FEATURES.items()}


class OnlineWriter:
    """Writes ingestor rows (``JOIN_KEY``, ``TIMESTAMP``, ``CREATED`` and every feature of
    ``FEATURES``) to the store's online store in one ``online_write_batch`` call."""

    def __init__(self, store):
        self.store = store
        self.view = store.get_feature_view(FEATURE_VIEW)  # read once: the registry costs ~6 ms a call
        self.provider = store._get_provider()
        self.convert = _converters()

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        data: list[tuple[Any, dict[str, Any], datetime, datetime | None]] = []
        for row in rows:
            key = EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=row[JOIN_KEY])])
            values = {name: convert(row.get(name)) for name, convert in self.convert.items()}
            data.append((key, values, row[TIMESTAMP], row.get(CREATED)))
        if data:
            self.provider.online_write_batch(self.store.config, self.view, data, progress=None)
        return len(data)
