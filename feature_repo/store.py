"""Open the Feast store that the settings describe, and the append-only offline layout.

Files live under ``<state_dir>/feast``::

    registry.db, online.db          Feast registry and SQLite online store (embedded default)
    offline/feedback_samples/       one parquet file per ingested micro-batch (append-only)

``feature_store.yaml`` (or ``feature_store.redis.yaml`` when ``feast.online_store`` is
``redis``) in this directory is the template; the paths come from the settings.

Offline rows are written by :func:`write_offline_batch`, never by Feast's offline push,
which rewrites the whole parquet file on every call. A batch that is written again after
a crash (pushed, but its Kafka offsets not yet committed) leaves duplicate rows in the
offline files; :func:`sample_entities` removes them when reading (dedupe on read: one
row per ``sample_id``, the first ``ingested_at`` wins), so training never sees a sample
twice.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from feature_repo.definitions import (
    CREATED,
    FEATURE_SERVICE,
    FEATURE_VIEW,
    FEATURES,
    JOIN_KEY,
    SUBJECT,
    TIMESTAMP,
    build,
)
from flywheel.errors import ConfigError
from flywheel.layout import StateLayout
from flywheel.stores import store_lock

if TYPE_CHECKING:
    from flywheel.settings import Settings

REPO_DIR = Path(__file__).resolve().parent
_ARROW_TYPES = {"String": "string", "Float64": "float64", "Bool": "bool_", "Int64": "int64"}


def feast_dir(settings: Settings) -> Path:
    return StateLayout.of(settings).feast


def offline_dir(settings: Settings) -> Path:
    return feast_dir(settings) / "offline" / FEATURE_VIEW


def offline_schema():

    fields = [
        pa.field(JOIN_KEY, pa.string()),
        pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC")),
        pa.field(CREATED, pa.timestamp("us", tz="UTC")),
    ]
    fields += [pa.field(n, getattr(pa, _ARROW_TYPES[t])()) for n, t in FEATURES.items()]
    fields.append(pa.field(SUBJECT, pa.string()))  # not a feature: the erasure index (flywheel.privacy)
    return pa.schema(fields)


def repo_config(settings: Settings):
    """The Feast RepoConfig: the YAML template of this repo with paths from the settings."""
    from feast.repo_config import RepoConfig

    repo = Path(settings.feast.repo_path) if settings.feast.repo_path else REPO_DIR
    name = "feature_store.redis.yaml" if settings.feast.online_store == "redis" else "feature_store.yaml"
    template = repo / name
    if not template.is_file():
        raise ConfigError(f"Feast config {template} not found; set feast.repo_path to a feature repo")
    conf = yaml.safe_load(template.read_text())
    base = feast_dir(settings)
    if settings.feast.registry_uri is not None:  # shared by every process and machine
        conf["registry"] = {
            "registry_type": "sql",
            "path": settings.feast.registry_uri.get_secret_value(),
            "cache_ttl_seconds": 60,
        }
    else:
        conf["registry"] = str(base / "registry.db")
    if settings.feast.online_store == "redis":
        conf["online_store"]["connection_string"] = redis_connection_string(settings)
    else:
        conf["online_store"]["path"] = str(base / "online.db")
    return RepoConfig(repo_path=repo, **conf)


def redis_connection_string(settings: Settings) -> str:
    """Feast's Redis connection string: ``feast.redis_connection_string`` plus the password
    (JSON-quoted: Feast parses each ``key=value`` as JSON, so a password of digits stays a
    string)."""

    text = settings.feast.redis_connection_string
    if settings.feast.redis_password is not None:
        text += ",password=" + json.dumps(settings.feast.redis_password.get_secret_value())
    return text


def open_store(settings: Settings, apply: bool = True):
    """A FeatureStore for the settings; with ``apply`` the definitions are applied if missing."""
    from feast import FeatureStore

    base = feast_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=repo_config(settings))
    if apply:
        names = {fv.name for fv in store.list_feature_views()}
        if FEATURE_VIEW not in names:
            with store_lock(settings.state_dir, "feast"):  # one process applies; the others wait
                store.refresh_registry()
                if FEATURE_VIEW not in {fv.name for fv in store.list_feature_views()}:
                    _apply(settings, store)
    return store


def _compact_online(store, doing: str):
    from feature_repo.online_sqlite import CompactSqliteOnlineStore

    if not str(store.config.online_store.type).endswith("CompactSqliteOnlineStore"):
        raise ConfigError(
            f"{doing} needs the SQLite online store, not {store.config.online_store.type!r}; with Redis, "
            "delete the keys with Redis's own tools"
        )
    return CompactSqliteOnlineStore()


def online_sample_ids(settings: Settings, store=None) -> set[str]:
    """The sample ids of every row of the online store (SQLite: ``CompactSqliteOnlineStore``)."""

    store = store or open_store(settings, apply=False)
    online = _compact_online(store, "listing online samples")
    keys = online.entity_keys(store.config, store.get_feature_view(FEATURE_VIEW))
    return {key.entity_values[0].string_val for key in keys}


def delete_online(settings: Settings, sample_ids: list[str], store=None) -> int:
    """Delete the online rows of ``sample_ids``; return how many there were."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    store = store or open_store(settings, apply=False)
    online = _compact_online(store, "erasing online rows")
    keys = [EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=i)]) for i in sample_ids]
    return online.delete_keys(store.config, store.get_feature_view(FEATURE_VIEW), keys)


def online_has(settings: Settings, sample_ids: list[str], store=None) -> set[str]:
    """Which of ``sample_ids`` have an online row (SQLite online store; none before the first apply)."""
    from feast.errors import FeatureViewNotFoundException
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    if (
        store is None
        and settings.feast.registry_uri is None
        and not (feast_dir(settings) / "registry.db").exists()
    ):
        return set()
    store = store or open_store(settings, apply=False)
    online = _compact_online(store, "reading online rows")
    try:
        view = store.get_feature_view(FEATURE_VIEW)
    except FeatureViewNotFoundException:
        return set()
    keys = [EntityKey(join_keys=[JOIN_KEY], entity_values=[Value(string_val=i)]) for i in sample_ids]
    rows = online.online_read(store.config, view, keys)
    return {i for i, (_, values) in zip(sample_ids, rows, strict=True) if values is not None}


@dataclass(frozen=True)
class OfflineMatch:
    """Offline rows that match an erasure: the files they are in, their sample ids, subjects
    and the image-store URIs they name."""

    files: dict[str, int]  # file name → matching rows
    sample_ids: set[str]
    uris: set[str]


def find_offline(
    settings: Settings, sample_ids: set[str], subjects: set[str], uri_columns=()
) -> OfflineMatch:
    """The offline rows of ``sample_ids`` or of ``subjects`` (pseudonyms), by a filtered scan
    that reads only the id and subject columns (and the URI columns of the matching files)."""

    files: dict[str, int] = {}
    found: set[str] = set()
    uris: set[str] = set()
    directory = offline_dir(settings)
    if not directory.is_dir() or not (sample_ids or subjects):
        return OfflineMatch(files, found, uris)
    dataset = ds.dataset(str(directory), format="parquet", schema=offline_schema())
    expr = ds.field(JOIN_KEY).isin(sorted(sample_ids)) if sample_ids else None
    if subjects:
        by_subject = ds.field(SUBJECT).isin(sorted(subjects))
        expr = by_subject if expr is None else (expr | by_subject)
    columns = [JOIN_KEY, *uri_columns]
    for fragment in dataset.get_fragments():
        table = fragment.to_table(schema=dataset.schema, columns=columns, filter=expr)
        if table.num_rows:
            files[Path(fragment.path).name] = table.num_rows
            found.update(table.column(JOIN_KEY).to_pylist())
            for column in uri_columns:
                uris.update(u for u in pc.unique(table.column(column)).to_pylist() if u)
    return OfflineMatch(files, found, uris)


def erase_offline(settings: Settings, files: list[str], sample_ids: set[str]) -> int:
    """Rewrite each of ``files`` without the rows of ``sample_ids`` (atomically: a new file
    beside it, then a rename; a file left empty is removed). Other files are not touched.
    Idempotent, so an erasure cut short is completed by running it again. Returns the rows removed."""

    removed = 0
    ids = sorted(sample_ids)
    for name in files:
        path = offline_dir(settings) / name
        if not path.is_file():
            continue  # rewritten to nothing by an earlier try
        table = pq.read_table(path)
        keep = table.filter(~ds.field(JOIN_KEY).isin(ids)) if ids else table
        gone = table.num_rows - keep.num_rows
        if not gone:
            continue
        removed += gone
        if keep.num_rows == 0 and not name.endswith("-seed.parquet"):
            path.unlink()
        else:
            _atomic_write(keep, path)
    return removed


def offline_uris(settings: Settings, uri_columns, skip: set[str]) -> set[str]:
    """The image URIs named by offline rows other than those of ``skip`` (what must stay)."""

    directory = offline_dir(settings)
    if not uri_columns or not directory.is_dir():
        return set()
    dataset = ds.dataset(str(directory), format="parquet", schema=offline_schema())
    table = dataset.to_table(columns=[JOIN_KEY, *uri_columns], filter=~ds.field(JOIN_KEY).isin(sorted(skip)))
    kept: set[str] = set()
    for column in uri_columns:
        kept.update(u for u in pc.unique(table.column(column)).to_pylist() if u)
    return kept


def apply_definitions(settings: Settings, store=None) -> list[str]:
    """Register the entity, sources, view and service (idempotent); return their names."""

    store = store or open_store(settings, apply=False)
    with store_lock(settings.state_dir, "feast"):  # one process applies at a time
        return _apply(settings, store)


def _apply(settings: Settings, store) -> list[str]:
    """Apply the definitions; the caller holds the ``feast`` store lock."""

    _seed_offline(settings)
    objects = build(offline_dir(settings))
    store.apply(list(objects.values()))
    return [o.name for o in objects.values()]


def _seed_offline(settings: Settings) -> None:
    """An empty parquet with the schema: retrieval over a directory needs at least one file."""

    directory = offline_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    seed = directory / "part-00000000-seed.parquet"
    if not seed.exists():
        schema = offline_schema()
        _atomic_write(schema.empty_table(), seed)


def _atomic_write(table, path: Path) -> None:

    tmp = path.parent.parent / f".tmp-{uuid.uuid4().hex}.parquet"  # outside the read directory
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_offline_batch(settings: Settings, rows, name: str) -> Path:
    """Append one micro-batch as a new file: ``rows`` are dicts (straight to Arrow columns)
    or a DataFrame, with the offline schema's columns.

    ``name`` should identify the batch (the ingestor uses its Kafka offsets), so a batch
    that is written twice with the same offsets replaces its own file.
    """

    schema = offline_schema()
    if isinstance(rows, list):
        table = pa.Table.from_pylist(rows, schema=schema)
    else:
        if SUBJECT not in rows:
            rows = rows.assign(**{SUBJECT: None})
        table = pa.Table.from_pandas(rows, schema=schema, preserve_index=False)
    path = offline_dir(settings) / f"part-{name}.parquet"
    _atomic_write(table, path)
    return path


def sample_entities(
    settings,
    model_name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    window_on: str = TIMESTAMP,
    columns: tuple[str, ...] = (),
):
    """Entity rows (sample_id, event_timestamp, ingested_at, *columns) of the offline store,
    one per sample.

    Filters by model and by ``start < <window_on> <= end`` (``window_on`` is
    ``event_timestamp`` or ``ingested_at``). A sample written twice keeps its first
    ingestion time, so a re-delivered batch never moves a sample into a later window.
    """

    wanted = list(dict.fromkeys([JOIN_KEY, TIMESTAMP, CREATED, *columns]))
    if not offline_dir(settings).is_dir():  # nothing applied or ingested yet
        return offline_schema().empty_table().select(wanted).to_pandas()
    dataset = ds.dataset(str(offline_dir(settings)), format="parquet", schema=offline_schema())
    expr = None if model_name is None else ds.field("model_name") == model_name
    frame = dataset.to_table(columns=wanted, filter=expr).to_pandas()
    frame = frame.sort_values(CREATED, kind="stable").drop_duplicates(JOIN_KEY, keep="first")
    if start is not None:
        frame = frame[frame[window_on] > _utc(start)]
    if end is not None:
        frame = frame[frame[window_on] <= _utc(end)]
    return frame.sort_values([TIMESTAMP, JOIN_KEY]).reset_index(drop=True)


def historical_samples(
    store,
    settings,
    model_name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    window_on: str = TIMESTAMP,
):
    """Point-in-time retrieval of the training feature service for the samples in a window.

    One row per sample (see the module docstring on dedupe on read), with ``ingested_at``.
    """

    entities = sample_entities(settings, model_name, start, end, window_on)[[JOIN_KEY, TIMESTAMP, CREATED]]
    if entities.empty:
        return pd.DataFrame(columns=[JOIN_KEY, TIMESTAMP, CREATED, *FEATURES])
    service = store.get_feature_service(FEATURE_SERVICE)
    frame = store.get_historical_features(entity_df=entities[[JOIN_KEY, TIMESTAMP]], features=service).to_df()
    # Retrieval may drop or reorder entity rows: merge back onto the entity frame.
    frame = entities.merge(frame.drop(columns=[TIMESTAMP]), on=JOIN_KEY, how="left")
    return frame.sort_values([TIMESTAMP, JOIN_KEY]).reset_index(drop=True)


def _utc(ts: datetime):

    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
