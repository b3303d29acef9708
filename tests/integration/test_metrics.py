"""The Prometheus endpoint against the real parts: a bounded stream job's outputs, the Feast
ingestor's commits, the review queue, and a broker that is down."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feature_repo.store import open_store
from flywheel.broker import free_port
from flywheel.kafka import Topics
from flywheel.settings import load_settings
from orchestration.metrics import StateCollector
from pipelines import review_sync
from pipelines.dlq import DlqRecord
from pipelines.ingest import Ingestor
from pipelines.review_queue import ReviewQueue
from pipelines.stats import read_topic
from tests.helpers import mixed_traffic
from tests.integration.kafka_utils import produce_raw
from tests.integration.test_stream_job import run_bounded, settled_accounting

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def scrape(settings) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(StateCollector(settings))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_show_the_runs_topics_dlq_reasons_lag_and_review_queue(settings):
    from flywheel.model_info import ModelInfo, write_model_info

    # the traffic's model exists (review items of unknown models are dead letters)
    write_model_info(
        settings.state_dir, ModelInfo("sentiment", "text-classification", ["negative", "positive"], "")
    )
    values, expected = mixed_traffic(400, seed=3)
    run_bounded(settings, produce_raw(settings, values))
    assert settled_accounting(settings).balanced
    Ingestor(settings, open_store(settings)).run(until_caught_up=True)
    queue = ReviewQueue(settings)
    review_sync.sync(queue)
    m = scrape(settings)
    for source in ("kafka", "dlq", "stream_job", "review_queue", "models", "durability"):
        assert m[("flywheel_metrics_source_up", (("source", source),))] == 1, source
    assert m[("flywheel_topic_offset", (("topic", "raw"),))] == 400  # produced without transactions
    assert m[("flywheel_topic_offset", (("topic", "dlq"),))] >= expected["dlq"]  # plus commit markers
    codes = Counter(
        DlqRecord.from_json(r.value()).code for r in read_topic(settings, Topics.from_settings(settings).dlq)
    )
    assert {k[1][0][1]: v for k, v in m.items() if k[0] == "flywheel_dlq_records"} == dict(codes)
    assert sum(codes.values()) == expected["dlq"]
    # caught up; what remains are the commit markers that end the job's transactions (at most
    # one per partition after the last record read)
    assert m[("flywheel_consumer_lag", (("group", settings.feast.group_id), ("topic", "clean")))] <= 3
    assert ("flywheel_consumer_lag", (("group", settings.stream.group_id), ("topic", "raw"))) in m
    assert m[("flywheel_review_pending", (("model", "sentiment"),))] == expected["review"]
    assert m[("flywheel_review_oldest_pending_age_seconds", (("model", "sentiment"),))] >= 0


def test_a_broker_that_is_down_marks_its_sources_and_the_rest_still_answer(tmp_path):
    down = load_settings(state_dir=tmp_path, broker={"port": free_port()})
    m = scrape(down)
    assert m[("flywheel_metrics_source_up", (("source", "kafka"),))] == 0
    assert m[("flywheel_metrics_source_up", (("source", "dlq"),))] == 0
    assert m[("flywheel_metrics_source_up", (("source", "review_queue"),))] == 1
    assert m[("flywheel_stream_job_running", ())] == 0
