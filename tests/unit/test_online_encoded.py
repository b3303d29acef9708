"""The online writer's encoded path (``feature_repo.online_write.RowEncoder`` +
``CompactSqliteOnlineStore.write_encoded``) against the proto path it replaces.

- Per value: the features blob is ``encode_features`` of the ``ValueProto``s the proto path
  builds, and the entity key is Feast's ``serialize_entity_key``, for every feature type of
  ``FEATURES``: nulls, NaN, -0.0, infinities, empty strings, unicode, long strings, bools,
  ints at the int64 bounds, values of another type than the feature's; with one encoder
  throughout, so values that hit its cache after an equal one (0.0 / -0.0, 1 / True) are
  checked too. A value the proto path refuses is refused alike.
- End to end: the same rows written both ways into two fresh stores leave the two tables
  byte for byte the same, and Feast's ``get_online_features`` reads the same from both.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from feature_repo.definitions import CREATED, FEATURE_VIEW, FEATURES, JOIN_KEY, TIMESTAMP
from feature_repo.online_sqlite import decode_features, encode_features
from feature_repo.online_write import OnlineWriter, RowEncoder, _converters

T0 = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
COMPACT = "feature_repo.online_sqlite.CompactSqliteOnlineStore"
TABLE = f"flywheel_{FEATURE_VIEW}_rows"

SAMPLES: dict[str, list[Any]] = {
    "String": [
        None,
        "",
        "a",
        "positive",
        "naïve 日本 \U0001f600 [EMAIL]",
        "\x00\n\"'\\",
        "x" * 64,
        "x" * 65,
        "é" * 40,  # 40 characters (kept by the cache), 80 bytes
        "y" * 127,
        "y" * 128,
        "z" * 70_000,  # a three-byte length
        12,  # another type: str(12), as the proto path converts it
        1.5,
        True,
    ],
    "Float64": [
        None,
        float("nan"),
        -float("nan"),
        0.0,
        -0.0,
        0.0,
        1.0,
        0.1,
        0.9,
        1e-300,
        5e-324,
        1.7976931348623157e308,
        float("inf"),
        float("-inf"),
        1,
        0,
        True,
        np.float64(0.25),
        np.float64(-0.0),
        np.float64("nan"),
        np.float32(0.1),
    ],
    "Int64": [
        None,
        0,
        1,
        -1,
        127,
        128,
        300,
        2**31,
        -(2**31),
        2**63 - 1,
        -(2**63),
        True,
        False,
        1,
        np.int64(7),
        2.0,
    ],
    "Bool": [None, True, False, 1, 0, True, np.bool_(True), np.bool_(False)],
}
SAMPLE_IDS = ["", "a", "evt-000001", "naïve 日本 \U0001f600", "k" * 127, "k" * 128, "q" * 70_000]


def _version() -> int:
    return 3  # the stores' entity_key_serialization_version (feature_repo.store)


def _proto_features(row: dict[str, Any]) -> bytes:
    return encode_features({name: convert(row.get(name)) for name, convert in _converters().items()})


def _proto_key(sample_id: Any) -> bytes:
    key = EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=sample_id)])
    return serialize_entity_key(key, entity_key_serialization_version=_version())


def _row(i: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FEATURES)
    row.update({JOIN_KEY: f"evt-{i:06d}", TIMESTAMP: T0 + timedelta(seconds=i), CREATED: T0})
    row.update(values)
    return row


def _outcome(make, *args) -> tuple:
    try:
        return ("ok", make(*args))
    except Exception as exc:  # noqa: BLE001 - compared: the same refusal both ways
        return ("error", type(exc).__name__)


def test_every_feature_type_encodes_as_feasts_protos():
    encoder = RowEncoder(_version(), _converters())
    assert set(SAMPLES) == set(FEATURES.values())
    checked = 0
    for order in (1, -1):  # again in reverse: every value also after its equals are cached
        for name, kind in FEATURES.items():
            for value in SAMPLES[kind][::order]:
                row = _row(checked, **{name: value})
                assert encoder.features(row) == _proto_features(row), (name, value)
                checked += 1
    assert checked > 300


def test_rows_mixing_every_feature_and_value_encode_as_feasts_protos():
    encoder = RowEncoder(_version(), _converters())
    names = list(FEATURES)
    for i in range(400):
        row = _row(i)
        for k, name in enumerate(names):
            values = SAMPLES[FEATURES[name]]
            row[name] = values[(i * (k + 3) + k) % len(values)]
        assert encoder.features(row) == _proto_features(row), row
        assert encoder.row(row) == encoder.proto_row(row)
    assert encoder.agrees()


def test_values_the_protos_refuse_are_refused_alike():
    encoder = RowEncoder(_version(), _converters())
    odd = [2**63, -(2**63) - 1, 10**30, "\ud800", [1], {"a": 1}, object()]
    for name, kind in FEATURES.items():
        for value in odd:
            row = _row(0, **{name: value})
            expected = _outcome(_proto_features, row)
            assert _outcome(encoder.features, row) == expected, (name, value)
            if kind == "Int64" and isinstance(value, int):
                assert expected[0] == "error"  # out of int64: not written either way


def test_the_entity_key_is_feasts():
    encoder = RowEncoder(_version(), _converters())
    for sample_id in SAMPLE_IDS:
        assert encoder.key(sample_id) == _proto_key(sample_id), sample_id[:20]
    for odd in ["\udc00", 12, None, b"bytes"]:
        assert _outcome(encoder.key, odd) == _outcome(_proto_key, odd), odd


def test_decoding_an_encoded_blob_gives_the_values_back():
    encoder = RowEncoder(_version(), _converters())
    row = _row(1, text="t" * 200, label="é", confidence=-0.0, low_confidence=True, pii_masks=-5, width=2**62)
    values = decode_features(encoder.features(row))
    assert list(values) == list(FEATURES)
    assert values["text"].string_val == "t" * 200 and values["label"].string_val == "é"
    assert values["confidence"].double_val == 0.0 and math.copysign(1, values["confidence"].double_val) == -1
    assert values["low_confidence"].bool_val is True and values["pii_masks"].int64_val == -5
    assert values["width"].int64_val == 2**62 and values["height"].WhichOneof("val") is None


# ---- end to end: two fresh stores ---------------------------------------------------------


def _store(folder, online_type: str = COMPACT):
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from feature_repo.definitions import build
    from feature_repo.store import REPO_DIR, _atomic_write, offline_schema

    folder.mkdir(parents=True)
    offline = folder / "offline"
    offline.mkdir()
    _atomic_write(offline_schema().empty_table(), offline / "part-seed.parquet")
    config = RepoConfig(
        repo_path=REPO_DIR,
        project="flywheel",
        provider="local",
        registry=str(folder / "registry.db"),
        online_store={"type": online_type, "path": str(folder / "online.db")},
        offline_store={"type": "file"},
        entity_key_serialization_version=_version(),
    )
    store = FeatureStore(config=config)
    store.apply(list(build(offline).values()))
    return store


def _table(store) -> list[tuple]:
    with sqlite3.connect(store.config.online_store.path) as conn:
        return conn.execute(f"SELECT * FROM {TABLE} ORDER BY 1").fetchall()


def _read(store, rows: list[dict]) -> tuple:
    response = store.get_online_features(
        features=[f"{FEATURE_VIEW}:{name}" for name in FEATURES],
        entity_rows=[{JOIN_KEY: r[JOIN_KEY]} for r in rows] + [{JOIN_KEY: "never-written"}],
    )
    results = response.proto.results
    stamps = [[t.seconds for t in r.event_timestamps] for r in results]
    statuses = [list(r.statuses) for r in results]
    values = {k: [repr(v) for v in column] for k, column in response.to_dict().items()}  # NaN == NaN
    return values, stamps, statuses


def _stream_rows(count: int) -> list[dict]:
    """Feast rows of the stream benchmark's clean records, as the ingestor makes them."""
    from bench.stream_load import payloads, plan
    from pipelines.fates import CLEAN
    from pipelines.ingest import parse_clean, sample_row
    from pipelines.transform import route_raw

    rows, seen = [], set()
    items = payloads(plan("encoded", count, 7), 7, ["short", "a longer text " * 8, "naïve 日本 \U0001f600"])
    for offset, (k, v) in enumerate(items):
        where, event_id, record, _ = route_raw(v, k, "feedback.raw", 0, offset, {}, 0.5, 4096, b"k" * 32)
        if where == CLEAN and event_id not in seen:
            seen.add(event_id)
            rows.append(sample_row(parse_clean(record.encode()), T0 + timedelta(minutes=1)))
    return rows


def _odd_rows() -> list[dict]:
    rows = []
    kinds = {name: SAMPLES[kind] for name, kind in FEATURES.items()}
    for i in range(60):
        row = _row(
            10_000 + i,
            **{name: values[(i + k) % len(values)] for k, (name, values) in enumerate(kinds.items())},
        )
        row[JOIN_KEY] = SAMPLE_IDS[i % (len(SAMPLE_IDS) - 1)] + f"-{i}"  # all distinct
        if i % 7 == 0:
            row[CREATED] = None
        rows.append(row)
    rows[0]["confidence"] = 0.5  # the first row types an all-null column for Feast's reader
    return rows


def test_rows_written_both_ways_leave_the_same_tables_and_read_the_same(tmp_path):
    encoded, protos = _store(tmp_path / "encoded"), _store(tmp_path / "protos")
    by_encoding, by_protos = OnlineWriter(encoded), OnlineWriter(protos)
    assert by_encoding.encoder is not None  # the encoded path with the compact store behind Feast's provider

    stream = _stream_rows(600)
    assert len(stream) > 300
    odd = _odd_rows()
    for rows in (stream[:250], odd, stream[250:]):
        assert by_encoding.write(rows) == len(rows)
        assert by_protos.write_protos(rows) == len(rows)
        assert _table(encoded) == _table(protos)
    # a re-delivered batch, changed: the upsert replaces the rows alike
    again = [
        {**r, "label": None, "pii_masks": 3, TIMESTAMP: r[TIMESTAMP] + timedelta(days=1)} for r in stream[:50]
    ]
    by_encoding.write(again)
    by_protos.write_protos(again)
    written = _table(encoded)
    assert written == _table(protos) and len(written) == len(stream) + len(odd)
    assert by_encoding.write([]) == 0

    checked = stream[:120] + odd
    assert _read(encoded, checked) == _read(protos, checked)


def test_other_stores_and_wrapped_providers_take_the_protos(tmp_path):
    feasts = _store(tmp_path / "feast", "sqlite")
    assert OnlineWriter(feasts).encoder is None
    compact = _store(tmp_path / "compact")

    class Wrapped:  # a provider wrapped as tests/integration/test_feast_ingest.py wraps it
        def __init__(self):
            self.provider = compact._get_provider()

        def __getattr__(self, name):
            return getattr(self.provider, name)

    class Store:
        def __getattr__(self, name):
            return getattr(compact, name)

        def _get_provider(self):
            return Wrapped()

    writer = OnlineWriter(Store())
    assert writer.encoder is None
    rows = [_row(i, label="x", low_confidence=False, pii_masks=i) for i in range(3)]
    assert writer.write(rows) == 3 and len(_table(compact)) == 3


def test_a_disagreeing_encoder_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(RowEncoder, "agrees", lambda self: False)
    with pytest.warns(UserWarning, match="through the protos"):
        writer = OnlineWriter(_store(tmp_path / "compact"))
    assert writer.encoder is None and writer.write([_row(1, low_confidence=True, pii_masks=0)]) == 1
