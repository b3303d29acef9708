"""The stream job's health report: the restart count from a final exception, the Python
step's execution mode."""

from __future__ import annotations

from flywheel.layout import StateLayout
from pipelines.job_health import JobHealth, python_step_mode, report_python_step, restarts_in_failure


def test_the_restart_count_is_read_from_the_strategy_that_refused_the_next_one():
    text = (
        "org.apache.flink.runtime.JobException: Recovery is suppressed by "
        "ExponentialDelayRestartBackoffTimeStrategy("
        "initialBackoffMS=200, maxBackoffMS=1000, attemptsBeforeResetBackoff=2, currentRestartAttempt=3, "
        "nextRestartTimestamp=1795703297513)"
    )
    assert restarts_in_failure(text) == 2
    assert restarts_in_failure("java.io.IOException: disk full") == 0
    assert restarts_in_failure("") == 0


def test_a_python_step_run_by_a_python_process_reports_process_mode(tmp_path):
    layout = StateLayout.of(tmp_path)
    layout.run_dir.mkdir(parents=True)
    assert python_step_mode(tmp_path) is None
    report_python_step(str(layout.stream_python_step))  # this test runs in python, not a JVM
    assert python_step_mode(tmp_path) == "process"
    health = JobHealth(pid=1, state="RUNNING", python_mode="thread", updated=1e12)
    assert "Python step in thread mode" in health.describe()
