"""The lag arithmetic of ``pipelines.lag`` (the Kafka reads are covered by test_metrics)."""

from pipelines.lag import summed


def test_lag_is_the_end_minus_what_was_committed_per_partition():
    assert summed({0: 10, 1: 5}, {0: 7, 1: 5}) == (15, 12)


def test_a_partition_never_committed_counts_from_zero():
    assert summed({0: 10, 1: 5}, {0: -1001}) == (15, 0)


def test_a_commit_past_the_end_is_clipped_to_it():
    assert summed({0: 3}, {0: 4624}) == (3, 3)
