"""Differentials for the ingestor's fast online path.

- ``OnlineWriter`` builds the very protos Feast's ``push`` builds: the same rows written both
  ways into ``CompactSqliteOnlineStore`` leave its table byte for byte the same.
- ``CompactSqliteOnlineStore`` answers reads as Feast's ``SqliteOnlineStore`` does: the same
  rows pushed into both, every read through ``get_online_features`` (values, statuses,
  event timestamps) is the same."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_repo.definitions import CREATED, FEATURE_VIEW, FEATURES, JOIN_KEY, PUSH_SOURCE, TIMESTAMP

T0 = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def _store(folder, online_type: str):
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
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    store.apply(list(build(offline).values()))
    return store


COMPACT = "feature_repo.online_sqlite.CompactSqliteOnlineStore"
FEAST_TABLE, COMPACT_TABLE = f"flywheel_{FEATURE_VIEW}", f"flywheel_{FEATURE_VIEW}_rows"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Feast's SQLite store, ours written by push, ours written by OnlineWriter."""
    base = tmp_path_factory.mktemp("online")
    return _store(base / "feast", "sqlite"), _store(base / "push", COMPACT), _store(base / "writer", COMPACT)


def _table(store, name: str) -> list[tuple]:
    with sqlite3.connect(store.config.online_store.path) as conn:
        return conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()


def _clear(store, name: str) -> None:
    with sqlite3.connect(store.config.online_store.path) as conn:
        conn.execute(f"DELETE FROM {name}")


def _read(store, rows: list[dict]) -> tuple:
    response = store.get_online_features(
        features=[f"{FEATURE_VIEW}:{name}" for name in FEATURES],
        entity_rows=[{JOIN_KEY: r[JOIN_KEY]} for r in rows] + [{JOIN_KEY: "never-written"}],
    )
    results = response.proto.results
    stamps = [[t.seconds for t in r.event_timestamps] for r in results]
    statuses = [list(r.statuses) for r in results]
    return response.to_dict(), stamps, statuses


def _both(stores, rows: list[dict]) -> None:
    import pandas as pd
    from feast.data_source import PushMode

    from feature_repo.online_write import OnlineWriter

    feast, pushed, written = stores
    _clear(feast, FEAST_TABLE)
    _clear(pushed, COMPACT_TABLE)
    _clear(written, COMPACT_TABLE)
    frame = pd.DataFrame(rows, columns=[JOIN_KEY, TIMESTAMP, CREATED, *FEATURES])
    feast.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
    pushed.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
    assert OnlineWriter(written).write(rows) == len(rows)
    by_writer = _table(written, COMPACT_TABLE)
    assert len(by_writer) == len(rows)
    assert by_writer == _table(pushed, COMPACT_TABLE)  # the writer's protos are push's
    assert _read(written, rows) == _read(feast, rows)  # the store reads as Feast's does


def _row(i: int, **values) -> dict:
    row = dict.fromkeys(FEATURES)
    row.update(
        {JOIN_KEY: f"evt-{i:06d}", TIMESTAMP: T0 + timedelta(seconds=i), CREATED: T0 + timedelta(hours=1)}
    )
    row.update(values)
    return row


TEXT = {"model_name": "m", "task": "text_classification", "source": "web", "label_source": "human"}


def test_text_rows_with_nulls_empty_strings_and_unicode_are_written_identically(stores):
    rows = [
        _row(
            0,
            **TEXT,
            text="great",
            label="positive",
            pred_label="positive",
            confidence=0.9,
            low_confidence=False,
            pii_masks=0,
            model_version="3",
        ),
        _row(
            1,
            **TEXT,
            text="",
            label=None,
            pred_label="negative",
            confidence=0.0,
            low_confidence=True,
            pii_masks=2,
        ),
        _row(
            2,
            **TEXT,
            text="naïve 日本 \U0001f600 [EMAIL]",
            label="neutral",
            confidence=1e-300,
            low_confidence=False,
            pii_masks=123456789,
        ),
        _row(3, **TEXT, text="no prediction", label="x", confidence=None, low_confidence=False, pii_masks=0),
    ]
    _both(stores, rows)


def test_image_rows_are_written_identically(stores):
    image = {**TEXT, "task": "image_restoration"}
    rows = [
        _row(
            i,
            **image,
            input_uri=f"file:///i/{i}.png",
            input_sha256="ab" * 32,
            target_uri=None,
            width=64 + i,
            height=48,
            confidence=None,
            low_confidence=False,
            pii_masks=0,
        )
        for i in range(5)
    ]
    _both(stores, rows)


def test_a_column_null_in_every_row_is_written_identically(stores):
    _both(stores, [_row(i, **TEXT, low_confidence=False, pii_masks=0) for i in range(3)])


text = st.one_of(st.none(), st.text(max_size=30))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "text": text,
                "label": text,
                "source": st.text(min_size=1, max_size=10),
                "confidence": st.one_of(st.none(), st.floats(0, 1)),
                "low_confidence": st.booleans(),
                "pii_masks": st.integers(0, 2**40),
                "seconds": st.integers(0, 10**8),
                "micros": st.integers(0, 999_999),
            }
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_text_rows_are_written_identically(stores, drawn):
    rows = []
    for i, d in enumerate(drawn):
        when = T0 + timedelta(seconds=d.pop("seconds"), microseconds=d.pop("micros"))
        rows.append(_row(i, **{**TEXT, **d}, **{TIMESTAMP: when}))
    if all(r["confidence"] is None for r in rows) or any(
        r["confidence"] is not None and math.isnan(r["confidence"]) for r in rows
    ):
        rows[0]["confidence"] = 0.5  # Feast types an all-null column by its first value
    _both(stores, rows)


def test_a_rewritten_sample_reads_its_latest_values(stores):
    from feature_repo.online_write import OnlineWriter

    _, _, written = stores
    first = _row(
        7, **TEXT, text="before", label="negative", confidence=0.25, low_confidence=True, pii_masks=1
    )
    second = {**first, "text": "after", "label": None, TIMESTAMP: T0 + timedelta(days=1)}
    OnlineWriter(written).write([first])
    OnlineWriter(written).write([second])
    values, stamps, _ = _read(written, [second])
    assert values["text"][0] == "after" and values["label"][0] is None
    assert stamps[-1][0] == int((T0 + timedelta(days=1)).timestamp())  # [0] is the join key


def test_the_store_lists_the_samples_it_holds(stores):
    from feature_repo.online_sqlite import CompactSqliteOnlineStore
    from feature_repo.online_write import OnlineWriter

    _, _, written = stores
    _clear(written, COMPACT_TABLE)
    OnlineWriter(written).write([_row(i, **TEXT, low_confidence=False, pii_masks=0) for i in range(4)])
    keys = CompactSqliteOnlineStore().entity_keys(written.config, written.get_feature_view(FEATURE_VIEW))
    assert sorted(k.entity_values[0].string_val for k in keys) == [f"evt-{i:06d}" for i in range(4)]


def test_a_store_written_by_feasts_sqlite_store_reads_the_same_after_the_switch(tmp_path):
    """An online.db written before this store existed (Feast's one row per feature): the
    compact store fills its table from it on first use, and every read answers the same."""
    import pandas as pd
    from feast import FeatureStore
    from feast.data_source import PushMode

    before = _store(tmp_path / "feast", "sqlite")
    rows = [
        _row(i, **TEXT, text=f"t{i}", label=None if i % 2 else "positive", low_confidence=False, pii_masks=i)
        for i in range(5)
    ]
    before.push(
        PUSH_SOURCE, pd.DataFrame(rows, columns=[JOIN_KEY, TIMESTAMP, CREATED, *FEATURES]), to=PushMode.ONLINE
    )
    expected = _read(before, rows)
    from feast.repo_config import RepoConfig

    after = FeatureStore(
        config=RepoConfig(
            repo_path=before.config.repo_path,
            project="flywheel",
            provider="local",
            registry=str(tmp_path / "feast" / "registry.db"),
            online_store={"type": COMPACT, "path": before.config.online_store.path},
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
        )
    )
    assert _read(after, rows) == expected
