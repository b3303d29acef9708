"""A SQLite online store for Feast that keeps one row per entity, written in one statement
per micro-batch.

Feast's own ``SqliteOnlineStore`` keeps one row per feature per entity (18 per feedback
event here) and writes them one ``INSERT ... ON CONFLICT`` at a time: about 165 µs per
event through ``push``, most of the ingestor's time. This store keeps each entity's
features as one row (the serialized ``ValueProto`` of every feature, by name, in one
blob), upserts a micro-batch with one ``executemany`` in one transaction, and opens the
database in WAL mode, so readers (``get_online_features``) never wait for the writer.

Reads go through Feast as before (``FeatureStore.get_online_features``):
``tests/unit/test_online_sqlite.py`` writes the same rows through Feast's store and this one
and checks every read answers the same, nulls and timestamps included. Timestamps are kept
in whole seconds, as Feast's store keeps them. A write replaces the entity's whole row
(Flywheel's ingestor always writes every feature).

Selected in ``feature_store.yaml`` through Feast's extension point::

    online_store:
      type: feature_repo.online_sqlite.CompactSqliteOnlineStore
      path: data/online.db
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id, _table_id
from feast.protos.feast.types.Value_pb2 import BytesList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.utils import make_tzaware

TYPE_NAME = "feature_repo.online_sqlite.CompactSqliteOnlineStore"

# One row of the store's table: (entity key, features blob, event_ts, created_ts).
EncodedRow = tuple[bytes, bytes, int | None, int | None]


class CompactSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """Feast's SQLite settings (``path``), under this store's type name."""

    type: Literal["feature_repo.online_sqlite.CompactSqliteOnlineStore"] = TYPE_NAME  # type: ignore[assignment]


def encode_features(values: dict[str, ValueProto]) -> bytes:
    """Every feature of one entity as one blob: name, value, name, value... in a BytesList."""
    items: list[bytes] = []
    for name, value in values.items():
        items += [name.encode("utf-8"), value.SerializeToString()]
    return ValueProto(bytes_list_val=BytesList(val=items)).SerializeToString()


def decode_features(blob: bytes) -> dict[str, ValueProto]:
    items = ValueProto.FromString(blob).bytes_list_val.val
    return {items[i].decode("utf-8"): ValueProto.FromString(items[i + 1]) for i in range(0, len(items), 2)}


def _epoch(value: datetime | None) -> int | None:
    """Whole seconds since the epoch (naive = UTC), as Feast's SQLite store keeps them."""
    return None if value is None else int(make_tzaware(value).timestamp())


class CompactSqliteOnlineStore(SqliteOnlineStore):
    _ensured: frozenset[str] = frozenset()  # tables known to exist (see ``_ensure``)

    @staticmethod
    def _table(config, table) -> str:
        name = _table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
        return _quote_id(f"{name}_rows")

    def _get_conn(self, config):
        fresh = not self._conn
        conn = super()._get_conn(config)
        if fresh:
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block on the writer
        return conn

    def _ensure(self, config, table) -> str:
        """The table's name, created if missing (a store applied before this store existed),
        and filled from Feast's own one-row-per-feature table of the same view if it holds
        rows, so reads see what was written before the switch."""
        name = self._table(config, table)
        if name in self._ensured:
            return name
        conn = self._get_conn(config)
        with conn:
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name.strip('"'),)
            ).fetchone()
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (entity_key BLOB PRIMARY KEY, "
                "features BLOB NOT NULL, event_ts INTEGER, created_ts INTEGER) WITHOUT ROWID"
            )
            old = _table_id(config.project, table, config.registry.enable_online_feature_view_versioning)
            if (
                fresh
                and conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (old,)
                ).fetchone()
            ):
                self._migrate(conn, _quote_id(old), name)
        self._ensured = self._ensured | {name}
        return name

    @staticmethod
    def _migrate(conn, old: str, new: str) -> None:
        rows = conn.execute(
            f"SELECT entity_key, feature_name, value, CAST(event_ts AS INTEGER), CAST(created_ts AS INTEGER) "
            f"FROM {old} ORDER BY entity_key"
        )
        merged: dict[bytes, tuple[dict[str, ValueProto], int | None, int | None]] = {}
        for key, feature, value, event_ts, created_ts in rows:
            values, _, _ = merged.setdefault(key, ({}, event_ts, created_ts))
            values[feature] = ValueProto.FromString(value)
        conn.executemany(
            f"INSERT OR IGNORE INTO {new} (entity_key, features, event_ts, created_ts) VALUES (?, ?, ?, ?)",
            [(key, encode_features(v), ts, created) for key, (v, ts, created) in merged.items()],
        )

    def update(
        self,
        config,
        tables_to_delete: Sequence[Any],
        tables_to_keep: Sequence[Any],
        entities_to_delete: Sequence[Any],
        entities_to_keep: Sequence[Any],
        partial: bool,
    ) -> None:
        for table in tables_to_keep:
            self._ensure(config, table)
        conn = self._get_conn(config)
        with conn:
            for table in tables_to_delete:
                conn.execute(f"DROP TABLE IF EXISTS {self._table(config, table)}")
                self._ensured = self._ensured - {self._table(config, table)}

    def plan(self, config, desired_registry_proto) -> list:
        return []  # its tables are made by ``update`` (``feast apply``), not as infra objects

    def online_write_batch(
        self,
        config,
        table,
        data: list[tuple[Any, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        version = config.entity_key_serialization_version
        rows = [
            (
                serialize_entity_key(key, entity_key_serialization_version=version),
                encode_features(values),
                _epoch(timestamp),
                _epoch(created),
            )
            for key, values, timestamp, created in data
        ]
        self.write_encoded(config, table, rows)
        if progress:
            progress(len(data))

    def write_encoded(self, config, table, rows: Sequence[EncodedRow]) -> None:
        """Upsert rows already in the table's form (not a Feast API): ``(entity key as
        ``serialize_entity_key`` writes it, ``encode_features`` blob, event and created time in
        whole seconds)``, in one transaction. ``online_write_batch`` ends here;
        ``feature_repo.online_write.OnlineWriter`` calls it with rows it encoded itself."""
        name = self._ensure(config, table)
        conn = self._get_conn(config)
        with conn:
            conn.executemany(
                f"INSERT INTO {name} (entity_key, features, event_ts, created_ts) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(entity_key) DO UPDATE SET features = excluded.features, "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
                rows,
            )

    def entity_keys(self, config, table) -> list[Any]:
        """Every entity key stored for ``table`` (audits and benchmarks; not a Feast API)."""
        from feast.infra.key_encoding_utils import deserialize_entity_key

        version = config.entity_key_serialization_version
        rows = self._get_conn(config).execute(f"SELECT entity_key FROM {self._ensure(config, table)}")
        return [deserialize_entity_key(key, version) for (key,) in rows]

    def delete_keys(self, config, table, entity_keys: list[Any]) -> int:
        """Delete the rows of ``entity_keys`` (erasure; not a Feast API); return how many were there."""
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys]
        name = self._ensure(config, table)
        conn = self._get_conn(config)
        deleted = 0
        with conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                deleted += conn.execute(
                    f"DELETE FROM {name} WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk
                ).rowcount
        return deleted

    def online_read(
        self,
        config,
        table,
        entity_keys: list[Any],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys]
        found: dict[bytes, tuple[int | None, bytes]] = {}
        name = self._ensure(config, table)
        conn = self._get_conn(config)
        for start in range(0, len(keys), 500):  # SQLite's bound on parameters per statement
            chunk = keys[start : start + 500]
            rows = conn.execute(
                f"SELECT entity_key, event_ts, features FROM {name} "
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update({key: (ts, blob) for key, ts, blob in rows})
        out: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for key in keys:
            if key not in found:
                out.append((None, None))
                continue
            ts, blob = found[key]
            out.append((None if ts is None else datetime.fromtimestamp(ts, UTC), decode_features(blob)))
        return out
