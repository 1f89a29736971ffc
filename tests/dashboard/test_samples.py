"""The dashboard's bounded history and the write rate and latency computed from it."""

from __future__ import annotations

import pytest

from raftpy.dashboard.samples import (
    HistogramCounts,
    NodeHistory,
    Sample,
    histogram_counts,
    quantile,
    series,
    window_latency,
    window_rate,
)
from tests.dashboard.fakes import histogram


def test_quantile_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    bounds = (0.001, 0.002, 0.004)
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [90, 9, 1, 0], 0.5) == 0.001
    assert quantile(bounds, [90, 9, 1, 0], 0.99) == 0.002
    assert quantile(bounds, [90, 9, 0, 1], 1.0) == 0.004  # overflow: the largest bound
    h = histogram(*([0.0003] * 98 + [0.05, 0.05]))  # agrees with the node's own Histogram
    for q in (0.5, 0.9, 0.99, 1.0):
        assert quantile(h.bounds, h.counts, q) == h.quantile(q)


def test_histogram_counts_tolerates_what_is_not_a_histogram() -> None:
    h = histogram(0.001)
    got = histogram_counts(h)
    assert got == HistogramCounts(tuple(h.bounds), tuple(h.counts))
    assert histogram_counts(None) is None
    assert histogram_counts(object()) is None
    bad = HistogramCounts((0.1, 0.2), (1, 2))  # one count short of an overflow bucket
    assert histogram_counts(bad) is None
    assert histogram_counts(HistogramCounts((0.1, float("inf")), (1, 2, 3))) is None
    assert histogram_counts(HistogramCounts((0.2, 0.1), (1, 2, 3))) is None


def test_history_is_bounded_by_age_and_by_count() -> None:
    h = NodeHistory(window=10.0, max_samples=100)
    for t in range(30):
        h.add(Sample(float(t), t))
    assert h.samples[0].time == 19.0  # older than 29 - 10 forgotten
    assert h.at(25.5) == Sample(25.0, 25)
    assert h.at(5.0) is None
    small = NodeHistory(window=1e9, max_samples=5)
    for t in range(50):
        small.add(Sample(float(t), t))
    assert len(small) == 5 and small.latest == Sample(49.0, 49)
    small.add(Sample(10.0, 99))  # from the past: dropped
    assert small.latest == Sample(49.0, 49)


def test_write_rate_follows_the_highest_commit_across_nodes() -> None:
    a, b = NodeHistory(600, 1000), NodeHistory(600, 1000)
    # a leads and commits 100/s until t=10 then dies; b lags, then commits on under a new
    # leader: the cluster's rate is the growth of the highest commit known.
    for t in range(11):
        a.add(Sample(float(t), 100 * t))
        b.add(Sample(float(t), max(0, 100 * t - 50)))
    for t in range(11, 21):
        b.add(Sample(float(t), 1000 + 50 * (t - 10)))
    assert window_rate([a, b], 2.0, 4.0) == pytest.approx(100.0)
    assert window_rate([a, b], 15.0, 20.0) == pytest.approx(50.0)
    assert window_rate([a, b], -5.0, 3.0) is None  # no picture at the start
    s = series([a, b], now=20.0, window=10.0, step=1.0)
    assert s["time"][-1] == 20.0 and len(s["time"]) == 10
    assert s["write_rate"][-1] == pytest.approx(50.0)


def test_latency_of_a_window_is_the_difference_of_two_histograms() -> None:
    a, b = NodeHistory(600, 1000), NodeHistory(600, 1000)
    slow_then_fast = [histogram(*([1.0] * 10)), histogram(*([1.0] * 10 + [0.001] * 90))]
    for t, h in enumerate(slow_then_fast):
        a.add(Sample(float(t), t, histogram_counts(h)))
    got = window_latency([a], 0.0, 1.0)
    assert got is not None
    assert got["p99"] == pytest.approx(0.0016) and got["count"] == 90  # the slow ones were before
    # A second node's writes add up; one that restarted (counts went down) is left out.
    b.add(Sample(0.0, 0, histogram_counts(histogram(*([0.5] * 50)))))
    b.add(Sample(1.0, 1, histogram_counts(histogram(0.5))))
    got = window_latency([a, b], 0.0, 1.0)
    assert got is not None and got["count"] == 90
    assert window_latency([NodeHistory(600, 10)], 0.0, 1.0) is None
