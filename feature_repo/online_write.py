"""Rows → the Feast online store, without the DataFrame → Arrow → protobuf round trip of
``FeatureStore.push``.

``push`` converts a micro-batch column by column through Arrow and re-reads the feature
view from the registry on every call; for the ingestor's rows, whose types are fixed by
``definitions.FEATURES``, that costs more than the write itself. ``OnlineWriter`` builds
the same ``ValueProto``s straight from the row dicts (``None`` and NaN become an empty
value, as Feast does) and hands them to the provider's ``online_write_batch`` (Feast's API
for stores), so the online store holds byte for byte what ``push`` would have written:
``tests/unit/test_online_sqlite.py`` checks it for every feature type, nulls included.

With Flywheel's own SQLite store (``feature_repo.online_sqlite``) behind Feast's
passthrough provider, even the protos are skipped: ``RowEncoder`` writes each row's table
row directly (the entity key in ``serialize_entity_key``'s layout, the features blob as
``encode_features`` would serialize it: one ``BytesList`` of name, ``Value``, name,
``Value``...), with the encoded (name, value) pair of each short value made once and kept,
and the store upserts them (``CompactSqliteOnlineStore.write_encoded``, the statement of
its ``online_write_batch``). Building 18 ``Value`` messages per row and serializing them
again was most of the ingestor's online write (bench/bench_ingest_rows.py: about 40 → 11 µs a
row). ``tests/unit/test_online_encoded.py`` holds the two paths to the same bytes; should a
self-check at start find them apart (a Feast or protobuf upgrade), the writer warns and
takes the proto path. Any other store (Redis), or a wrapped provider, takes the proto path.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
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


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(message, field: str) -> bytes:
    """The key of ``field`` of ``message`` on the wire (its number and wire type)."""
    d = message.DESCRIPTOR.fields_by_name[field]  # a FieldDescriptor: its TYPE_ constants too
    wire = {d.TYPE_STRING: 2, d.TYPE_BYTES: 2, d.TYPE_MESSAGE: 2, d.TYPE_DOUBLE: 1}.get(d.type, 0)  # 0 varint
    return _varint(d.number << 3 | wire)


_LONG = 64  # a string longer than this (a text, a URI) is encoded each time, not kept
_CACHE_MAX = 8192  # kept pairs; the cache starts again empty past it
_UINT64 = (1 << 64) - 1


class RowEncoder:
    """An ingestor row → its row of ``CompactSqliteOnlineStore``'s table, the bytes
    ``serialize_entity_key`` and ``encode_features`` would make of the row's protos (checked
    by ``tests/unit/test_online_encoded.py``). Values of a type the feature does not expect
    (an int for a String, a numpy float) are converted as the proto path converts them."""

    def __init__(self, entity_key_serialization_version: int, convert: dict[str, Callable[[Any], Any]]):
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import BytesList, Value

        self.version = entity_key_serialization_version
        self.convert = convert
        self._serialize_key = serialize_entity_key
        self._entity_key, self._value = EntityKey, Value
        self._blob_tag = _tag(Value, "bytes_list_val")
        self._item = _tag(BytesList, "val")
        self._string, self._double = _tag(Value, "string_val"), _tag(Value, "double_val")
        self._int64, bool_tag = _tag(Value, "int64_val"), _tag(Value, "bool_val")
        self._bools = {True: bool_tag + b"\x01", False: bool_tag + b"\x00"}
        # per feature: its name's BytesList item, the (name, null) pair, its value encoder
        self._features = [
            (name, head, head + self._bytes_item(b""), self._encoder(name))
            for name, head in ((name, self._bytes_item(name.encode("utf-8"))) for name in convert)
        ]
        self._cache: dict[tuple[str, type, Any], bytes] = {}
        from feature_repo.online_sqlite import _epoch

        self._epoch = _epoch
        # The key is "<I count> <I type> <I len> join key" then the value: "<I type> <I len> bytes";
        # everything before the value's length is the same for every sample_id.
        probe = self._proto_key("x")
        self._key_head: bytes | None = probe[:-5] if probe.endswith(struct.pack("<I", 1) + b"x") else None

    def _bytes_item(self, data: bytes) -> bytes:
        return self._item + _varint(len(data)) + data

    def _proto_key(self, sample_id: Any) -> bytes:
        key = self._entity_key(join_keys=[JOIN_KEY], entity_values=[self._value(string_val=sample_id)])
        return self._serialize_key(key, entity_key_serialization_version=self.version)

    def _encoder(self, name: str) -> Callable[[Any], bytes]:
        """``name``'s value → its serialized ``Value`` (what ``convert`` makes, serialized)."""
        convert = self.convert[name]

        def proto(value: Any) -> bytes:
            return convert(value).SerializeToString()

        kind = FEATURES.get(name)
        if kind == "String":
            tag = self._string

            def string(value: Any) -> bytes:
                if value.__class__ is not str:
                    return proto(value)
                try:
                    data = value.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate: the proto says so, as before
                    return proto(value)
                return tag + _varint(len(data)) + data

            return string
        if kind == "Float64":
            tag, pack = self._double, struct.Struct("<d").pack

            def double(value: Any) -> bytes:
                if value.__class__ is not float:
                    return proto(value)
                return b"" if value != value else tag + pack(value)  # NaN: an empty Value

            return double
        if kind == "Int64":
            tag = self._int64

            def int64(value: Any) -> bytes:
                if value.__class__ is not int or not -(1 << 63) <= value < 1 << 63:
                    return proto(value)  # out of range: the proto refuses it, as before
                return tag + _varint(value & _UINT64)

            return int64
        if kind == "Bool":
            bools = self._bools

            def boolean(value: Any) -> bytes:
                return bools[value] if value.__class__ is bool else proto(value)

            return boolean
        return proto

    def key(self, sample_id: Any) -> bytes:
        """``serialize_entity_key`` of the entity key ``{JOIN_KEY: sample_id}``."""
        if self._key_head is not None and sample_id.__class__ is str:
            try:
                data = sample_id.encode("utf-8")
            except UnicodeEncodeError:
                return self._proto_key(sample_id)
            return self._key_head + struct.pack("<I", len(data)) + data
        return self._proto_key(sample_id)

    def features(self, row: dict[str, Any]) -> bytes:
        """``encode_features`` of the row's ``Value``s."""
        cache, item = self._cache, self._item
        parts: list[bytes] = []
        for name, head, null, encode in self._features:
            value = row.get(name)
            if value is None:
                parts.append(null)
                continue
            kind = value.__class__
            # Kept: short strings, ints and bools, whose equal values encode alike. Not floats
            # (-0.0 == 0.0 but they encode apart; NaN != NaN), long strings (one per row) or
            # other types.
            if kind is int or kind is bool or (kind is str and len(value) <= _LONG):
                key = (name, kind, value)
                pair = cache.get(key)
                if pair is None:
                    data = encode(value)
                    pair = head + item + _varint(len(data)) + data
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[key] = pair
            else:
                data = encode(value)
                pair = head + item + _varint(len(data)) + data
            parts.append(pair)
        inner = b"".join(parts)
        return self._blob_tag + _varint(len(inner)) + inner

    def row(self, row: dict[str, Any]) -> tuple[bytes, bytes, int | None, int | None]:
        """The table row of ``row``: (entity key, features blob, event_ts, created_ts)."""
        epoch = self._epoch
        return self.key(row[JOIN_KEY]), self.features(row), epoch(row[TIMESTAMP]), epoch(row.get(CREATED))

    def proto_row(self, row: dict[str, Any]) -> tuple[bytes, bytes, int | None, int | None]:
        """The same through the protos (what ``CompactSqliteOnlineStore.online_write_batch`` makes)."""
        from feature_repo.online_sqlite import encode_features

        values = {name: convert(row.get(name)) for name, convert in self.convert.items()}
        epoch = self._epoch
        return (
            self._proto_key(row[JOIN_KEY]),
            encode_features(values),
            epoch(row[TIMESTAMP]),
            epoch(row.get(CREATED)),
        )

    def agrees(self) -> bool:
        """Whether ``row`` gives what ``proto_row`` gives on a few rows of every feature type
        (nulls, NaN, -0.0, bounds, unicode, long strings): the start-up self-check."""
        when = datetime(2026, 1, 1, tzinfo=UTC)
        samples: dict[str, list[Any]] = {
            "String": [None, "", "a", "naïve 日本 \U0001f600", "x" * 300],
            "Float64": [None, 0.0, -0.0, 0.5, float("nan"), 1e308, 5e-324],
            "Int64": [None, 0, 1, -1, 127, 128, (1 << 63) - 1, -(1 << 63)],
            "Bool": [None, True, False],
        }
        rows = []
        for i in range(max(len(v) for v in samples.values())):
            row: dict[str, Any] = {JOIN_KEY: f"probe-{i}-é", TIMESTAMP: when, CREATED: None}
            for name in self.convert:
                values = samples.get(FEATURES.get(name, ""), [None])
                row[name] = values[i % len(values)]
            rows.append(row)
        return all(self.row(r) == self.proto_row(r) for r in rows)


def _encoded_store(provider) -> Any:
    """The provider's ``CompactSqliteOnlineStore`` when rows may go to it encoded: behind Feast's
    own passthrough provider (whose ``online_write_batch`` only hands the rows on), else None."""
    from feast.infra.passthrough_provider import PassthroughProvider

    from feature_repo.online_sqlite import CompactSqliteOnlineStore

    if type(provider) is not PassthroughProvider:
        return None  # another provider, or a wrapper (tests inject failures that way)
    store = provider.online_store
    return store if isinstance(store, CompactSqliteOnlineStore) else None


class OnlineWriter:
    """Writes ingestor rows (``JOIN_KEY``, ``TIMESTAMP``, ``CREATED`` and every feature of
    ``FEATURES``) to the store's online store in one ``online_write_batch`` call (one
    ``write_encoded`` call with Flywheel's SQLite store)."""

    def __init__(self, store):
        self.store = store
        self.view = store.get_feature_view(FEATURE_VIEW)  # read once: the registry costs ~6 ms a call
        self.provider = store._get_provider()
        self.convert = _converters()
        self.encoded = _encoded_store(self.provider)
        self.encoder: RowEncoder | None = None
        if self.encoded is not None:
            self.encoder = RowEncoder(store.config.entity_key_serialization_version, self.convert)
            if not self.encoder.agrees():
                warnings.warn(
                    "the online writer's encoding differs from Feast's protos here: rows go through "
                    "the protos (correct, slower); tests/unit/test_online_encoded.py says where",
                    stacklevel=2,
                )
                self.encoded = self.encoder = None

    def write(self, rows: Iterable[dict[str, Any]]) -> int:
        if self.encoder is not None:
            encoded = [self.encoder.row(row) for row in rows]
            if encoded:
                self.encoded.write_encoded(self.store.config, self.view, encoded)
            return len(encoded)
        return self.write_protos(rows)

    def write_protos(self, rows: Iterable[dict[str, Any]]) -> int:
        """The rows as ``ValueProto``s through the provider's ``online_write_batch`` (any store)."""
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
