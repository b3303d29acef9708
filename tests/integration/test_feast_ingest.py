"""The Feast ingestor against a real broker and a real Feast store (SQLite online, parquet offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feature_repo.definitions import JOIN_KEY
from feature_repo.store import historical_samples, offline_dir, open_store, sample_entities
from flywheel.events import validate_event
from flywheel.kafka import Topics
from pipelines.ingest import Ingestor
from pipelines.records import Origin, RoutedRecord
from tests.helpers import make_event
from tests.integration.kafka_utils import produce_raw

pytestmark = pytest.mark.integration


def clean_records(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        event = validate_event(make_event(i, input={"text": f"clean text {i}"}))
        out.append(RoutedRecord.of(event, False, 0, Origin("t.raw", 0, i)).to_json().encode())
    return out


class Crash(RuntimeError):
    pass


def test_ingestor_killed_between_push_and_commit_leaves_no_duplicate_training_rows(settings):
    feast = settings.feast.model_copy(update={"ingest_batch_size": 100})
    settings = settings.model_copy(update={"feast": feast})
    produce_raw(settings, clean_records(1_000), topic=Topics.from_settings(settings).clean)
    store = open_store(settings)

    def crash_on_third_batch(offsets, seen=[]):  # noqa: B006 - a counter across calls
        seen.append(offsets)
        if len(seen) == 3:
            raise Crash("killed after the write, before the commit")

    with pytest.raises(Crash):
        Ingestor(settings, store, after_write=crash_on_third_batch).run(until_caught_up=True)
    stats = Ingestor(settings, store).run(until_caught_up=True)

    # The third batch was written, not committed, and written again after the restart.
    assert 1_000 - 200 <= stats.rows < 1_000
    import pyarrow.dataset as ds

    written = ds.dataset(str(offline_dir(settings)), format="parquet").count_rows()
    assert written >= 1_000  # more when the re-delivered batch was cut differently
    entities = sample_entities(settings)
    assert len(entities) == 1_000 and entities[JOIN_KEY].is_unique
    rows = historical_samples(store, settings, model_name="sentiment")
    assert len(rows) == 1_000 and rows[JOIN_KEY].is_unique
    assert set(rows["text"]) == {f"clean text {i}" for i in range(1_000)}
    assert (rows["label"] == "positive").all()

    online = store.get_online_features(
        features=["feedback_samples:text", "feedback_samples:label"],
        entity_rows=[{JOIN_KEY: "evt-000007"}, {JOIN_KEY: "evt-000999"}],
    ).to_dict()
    assert online["text"] == ["clean text 7", "clean text 999"]


def test_failed_pushes_are_retried_and_nothing_is_skipped(settings):
    produce_raw(settings, clean_records(50), topic=Topics.from_settings(settings).clean)
    store = open_store(settings)

    class Flaky:
        """The real store, whose first two online writes fail (its provider's write, which
        the ingestor's ``OnlineWriter`` calls)."""

        def __init__(self):
            self.failures = 2

        def __getattr__(self, name):
            return getattr(store, name)

        def _get_provider(self):
            provider, flaky = store._get_provider(), self

            class FlakyProvider:
                def __getattr__(self, name):
                    return getattr(provider, name)

                def online_write_batch(self, *args, **kwargs):
                    if flaky.failures:
                        flaky.failures -= 1
                        raise ConnectionError("online store unavailable")
                    return provider.online_write_batch(*args, **kwargs)

            return FlakyProvider()

    logs: list[str] = []
    stats = Ingestor(settings, Flaky(), log=logs.append).run(until_caught_up=True)
    assert stats.retries == 2 and stats.rows == 50
    assert "online store unavailable" in logs[0] and "retrying" in logs[0]
    assert len(historical_samples(store, settings)) == 50


def test_a_malformed_clean_record_stops_the_ingestor_without_committing(settings):
    topic = Topics.from_settings(settings).clean
    produce_raw(settings, [json.dumps({"event": {"event_id": "x"}}).encode()], topic=topic)
    from pipelines.ingest import IngestError

    with pytest.raises(IngestError, match="stops here without committing"):
        Ingestor(settings, open_store(settings)).run(until_caught_up=True)
    with pytest.raises(IngestError):  # still there: it was not skipped
        Ingestor(settings, open_store(settings)).run(until_caught_up=True)


REDIS_PASSWORD = "0042-secret"  # digits first: Feast parses it as JSON and must keep it a string


@pytest.fixture(params=[None, REDIS_PASSWORD], ids=["open", "password"])
def redis_server(tmp_path, request):
    """A real redis-server, open or with ``requirepass``; yields (address, password)."""
    from tests.services import redis_server as server

    with server(tmp_path, request.param) as address:
        yield address, request.param


def test_the_redis_online_store_variant(settings, redis_server):
    import redis
    from pydantic import SecretStr

    address, password = redis_server
    feast = settings.feast.model_copy(
        update={
            "online_store": "redis",
            "redis_connection_string": address,
            "redis_password": SecretStr(password) if password else None,
        }
    )
    settings = settings.model_copy(update={"feast": feast})
    produce_raw(settings, clean_records(200), topic=Topics.from_settings(settings).clean)
    store = open_store(settings)
    assert store.config.online_store.type == "redis"
    assert Ingestor(settings, store).run(until_caught_up=True).rows == 200
    host, port = address.split(":")
    if password:  # without the password Redis refuses: nothing is readable or writable
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host=host, port=int(port)).dbsize()
    assert redis.Redis(host=host, port=int(port), password=password).dbsize() == 200  # one hash per sample
    online = store.get_online_features(
        features=["feedback_samples:text"], entity_rows=[{JOIN_KEY: "evt-000042"}]
    ).to_dict()
    assert online["text"] == ["clean text 42"]
    assert len(historical_samples(store, settings)) == 200  # the offline side is unchanged


def test_the_sql_registry_on_postgresql(settings):
    """Feast's registry in PostgreSQL (production shape): definitions applied once are seen by
    every store opened on the same database, and ingest and reads work through it."""
    from pydantic import SecretStr

    from tests.services import postgres

    with postgres("feast") as db:
        feast = settings.feast.model_copy(update={"registry_uri": SecretStr(db)})
        settings = settings.model_copy(update={"feast": feast})
        produce_raw(settings, clean_records(50), topic=Topics.from_settings(settings).clean)
        store = open_store(settings)
        assert store.config.registry.registry_type == "sql"
        assert Ingestor(settings, store).run(until_caught_up=True).rows == 50
        other = open_store(settings, apply=False)  # another process: nothing applied, all known
        assert [v.name for v in other.list_feature_views()] == ["feedback_samples"]
        online = other.get_online_features(
            features=["feedback_samples:text"], entity_rows=[{JOIN_KEY: "evt-000007"}]
        ).to_dict()
        assert online["text"] == ["clean text 7"]
    assert not (Path(settings.state_dir) / "feast" / "registry.db").exists()  # no file registry


def test_every_fate_lands_and_review_items_of_unknown_models_are_dead_lettered(settings):
    """The ingestor records each record's fate (issue 26) and keeps review items of models
    nobody trained out of the queue and its metrics, as dead letters ``unknown_model``
    (issue 27, item 5)."""
    from flywheel.model_info import ModelInfo, write_model_info
    from pipelines.fates import FateLedger
    from pipelines.records import DuplicateRecord
    from pipelines.review_queue import ReviewQueue

    write_model_info(
        settings.state_dir, ModelInfo("sentiment", "text-classification", ["negative", "positive"], "")
    )
    topics = Topics.from_settings(settings)
    review = [
        RoutedRecord.of(
            validate_event(make_event(i, model_name=name, event_id=f"r-{name}-{i}")),
            True,
            0,
            Origin(topics.raw, 0, i),
        )
        .to_json()
        .encode()
        for i, name in enumerate(["sentiment", "junk-model-1", "junk-model-2"])
    ]
    produce_raw(settings, review, topic=topics.review)
    produce_raw(settings, clean_records(3), topic=topics.clean)
    produce_raw(
        settings,
        [DuplicateRecord("evt-000000", Origin(topics.raw, 0, 99)).to_json().encode()],
        topic=topics.duplicates,
    )
    Ingestor(settings, open_store(settings), settle=False).run(until_caught_up=True)
    ledger = FateLedger.of(settings)
    try:
        assert ledger.fate_of("r-sentiment-0") == "review"
        assert ledger.fate_of("r-junk-model-1-1") == "dlq" and ledger.fate_of("r-junk-model-2-2") == "dlq"
        reasons = [
            json.loads(r)["reason"]["code"] for (r,) in ledger.db.execute("SELECT record FROM dead_letters")
        ]
        assert reasons == ["unknown_model", "unknown_model"]
        assert (
            ledger.counts()["clean"] == 3 and ledger.counts()["repeats"] == 1
        )  # the duplicate of evt-000000
    finally:
        ledger.close()
    queue = ReviewQueue(settings)
    assert queue.models() == {"sentiment": 1}
    queue.close()
