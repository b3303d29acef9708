"""Differential: the ingestor's fast online write (``OnlineWriter`` + ``BatchSqliteOnlineStore``)
leaves the online store byte for byte as Feast's own path (``push`` into Feast's
``SqliteOnlineStore``) does, and reads through Feast give the same answers."""

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


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("online")
    return _store(base / "feast", "sqlite"), _store(
        base / "ours", "feature_repo.online_sqlite.BatchSqliteOnlineStore"
    )


def _table(store) -> list[tuple]:
    path = store.config.online_store.path
    with sqlite3.connect(path) as conn:
        return conn.execute(
            f"SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
            f"FROM flywheel_{FEATURE_VIEW} ORDER BY entity_key, feature_name"
        ).fetchall()


def _clear(store) -> None:
    with sqlite3.connect(store.config.online_store.path) as conn:
        conn.execute(f"DELETE FROM flywheel_{FEATURE_VIEW}")


def _both(stores, rows: list[dict]) -> None:
    import pandas as pd

    from feature_repo.online_write import OnlineWriter

    feast, ours = stores
    _clear(feast)
    _clear(ours)
    frame = pd.DataFrame(rows, columns=[JOIN_KEY, TIMESTAMP, CREATED, *FEATURES])
    from feast.data_source import PushMode

    feast.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)
    assert OnlineWriter(ours).write(rows) == len(rows)
    expected, got = _table(feast), _table(ours)
    assert len(got) == len(rows) * len(FEATURES)
    assert got == expected


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


def test_reads_through_feast_see_the_written_rows(stores):
    _, ours = stores
    rows = [
        _row(i, **TEXT, text=f"t{i}", label="positive", confidence=0.25, low_confidence=True, pii_masks=1)
        for i in range(3)
    ]
    from feature_repo.online_write import OnlineWriter

    OnlineWriter(ours).write(rows)
    got = ours.get_online_features(
        features=[f"{FEATURE_VIEW}:text", f"{FEATURE_VIEW}:confidence", f"{FEATURE_VIEW}:pii_masks"],
        entity_rows=[{JOIN_KEY: r[JOIN_KEY]} for r in rows],
    ).to_dict()
    assert (
        got["text"] == ["t0", "t1", "t2"] and got["confidence"] == [0.25] * 3 and got["pii_masks"] == [1] * 3
    )
