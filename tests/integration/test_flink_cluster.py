"""The stream job on a real standalone Flink cluster (PyFlink's own JobManager and
TaskManager scripts): parallelism 2, an upgrade through a savepoint, and a TaskManager
killed mid-stream, with the accounting exact after each."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from flywheel.layout import StateLayout
from flywheel.settings import load_settings
from pipelines import flink_cluster
from pipelines.stats import accounting
from tests.helpers import mixed_traffic
from tests.integration.kafka_utils import produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def caught_up(settings, raw: int, timeout_s: float = 240):
    deadline = time.monotonic() + timeout_s
    a = accounting(settings)
    while not (a.balanced and a.raw == raw) and time.monotonic() < deadline:
        time.sleep(2)
        a = accounting(settings)
    return a


def test_the_job_runs_on_a_cluster_upgrades_through_a_savepoint_and_survives_a_taskmanager(settings):
    s = load_settings(
        state_dir=settings.state_dir,
        broker={"port": settings.broker.port},
        kafka={"topic_prefix": settings.kafka.topic_prefix, "delivery_timeout_s": 20},
        stream={"parallelism": 2, "checkpoint_interval_ms": 1000},
    )
    values, expected = mixed_traffic(3_000, seed=5)
    cluster = flink_cluster.start(s, taskmanagers=1, slots=2)
    try:
        config = StateLayout.of(s).flink_cluster / "flywheel.yaml"
        s.write_resolved(config)
        job = flink_cluster.submit(s, config)
        produce_raw(s, values[:1_000])
        a = caught_up(s, 1_000)
        assert a.balanced, a
        (running,) = [j for j in flink_cluster.jobs(cluster) if j["jid"] == job]
        assert running["state"] == "RUNNING" and running["tasks"]["running"] >= 2  # parallelism 2
        step = json.loads(StateLayout.of(s).stream_python_step.read_text())
        assert step["mode"] == "thread" and step["executable"] == "java"  # Python inside the TaskManager

        # upgrade: stop with a savepoint, resubmit from it (offsets and dedupe state carried over)
        savepoint = flink_cluster.stop_with_savepoint(s, job)
        produce_raw(s, values[1_000:2_000])  # arrives while no job runs
        job = flink_cluster.submit(s, config, savepoint=savepoint)
        assert caught_up(s, 2_000).balanced

        # a TaskManager dies mid-stream; a new one takes its slots and the job recovers
        (pid,) = flink_cluster.taskmanager_pids(s)
        produce_raw(s, values[2_000:2_500])
        os.kill(pid, signal.SIGKILL)
        produce_raw(s, values[2_500:])
        flink_cluster.add_taskmanager(s)
        a = caught_up(s, 3_000)
        assert (a.clean, a.review, a.dlq, a.duplicates) == (
            expected["clean"],
            expected["review"],
            expected["dlq"],
            expected["duplicates"],
        ), a
        states = {j["jid"]: j["state"] for j in flink_cluster.jobs(cluster)}
        assert states[job] == "RUNNING", states
        from orchestration.status import part_health

        shown = part_health(s)["flink cluster"]  # what `flywheel status` says
        assert not shown.startswith("DEGRADED") and "RUNNING" in shown and "1 TaskManager(s)" in shown, shown
    finally:
        flink_cluster.stop(s)
    assert flink_cluster.overview(cluster) is None  # stopped
    assert flink_cluster.read(s) is None  # and forgotten: `flywheel status` no longer shows it
