"""Latency measurement with fake sessions (no runtime, each test well under 3 s)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgekit.stages import benchmark
from edgekit.stages.benchmark import BLOCK, Latency, block_counts, measure

FEED = {"x": np.zeros((1, 2), np.float32)}


class SleepSession:
    """Sleeps for `seconds` per run and counts the runs and the feeds it saw."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.output_names = ["y"]
        self.runtime = "fake"
        self.settings = {}
        self.calls = 0
        self.feeds = []

    def run(self, feed):
        self.calls += 1
        self.feeds.append(feed)
        time.sleep(self.seconds)
        return [np.zeros(1, np.float32)]


def test_measure_stats_and_ordering():
    fast, slow = SleepSession(0.001), SleepSession(0.004)
    progress = []
    start = time.perf_counter()
    result = measure({"fast": fast, "slow": slow}, FEED, min_runs=20, min_seconds=0.05, max_seconds=2.0,
                     on_progress=progress.append)
    assert time.perf_counter() - start < 60.0  # a hang guard, not a speed check: a busy runner is slow
    assert set(result) == {"fast", "slow"}
    for name, lat in result.items():
        assert isinstance(lat, Latency)
        assert lat.runs >= 20
        assert lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
        assert lat.min <= lat.mean <= lat.max
        assert lat.std >= 0.0
        assert lat.cv == pytest.approx(lat.std / lat.mean)
        assert lat.noisy == (lat.cv > benchmark.NOISY_CV)
        assert lat.first_ms > 0.0
        d = lat.to_dict()
        assert set(d) >= {"p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv", "runs", "first_ms", "noisy"}
    # a sleep of 1 ms / 4 ms takes at least that long
    assert result["fast"].min >= 1.0
    assert result["slow"].min >= 4.0
    assert result["slow"].p50 > result["fast"].p50
    # round-robin in blocks of about the same time (not of the same count): the 1 ms session runs more often than
    # the 4 ms one (about 4x on an idle machine; a busy one stretches both sleeps, so only the order is asserted)
    assert result["fast"].runs > result["slow"].runs
    # every session is run with the given feed: first run, warm-up, settle and timed runs all counted
    assert fast.calls >= 1 + BLOCK + result["fast"].runs
    assert all(f is FEED for f in fast.feeds + slow.feeds)
    # progress is reported, within [0, 1]
    assert progress
    assert all(0.0 <= p <= 1.0 for p in progress)


def test_measure_respects_min_seconds():
    session = SleepSession(0.0)
    start = time.perf_counter()
    result = measure({"s": session}, FEED, min_runs=1, min_seconds=0.3, max_seconds=2.0)
    assert time.perf_counter() - start >= 0.3
    assert result["s"].runs > 1


def test_measure_respects_max_seconds():
    session = SleepSession(0.002)
    progress = []
    start = time.perf_counter()
    result = measure({"s": session}, FEED, min_runs=10**9, min_seconds=0.0, max_seconds=0.3,
                     on_progress=progress.append)
    elapsed = time.perf_counter() - start
    # the timed phase stops within a block of max_seconds: every run sleeps at least 2 ms, so however busy the
    # machine, at most (max_seconds + one block) / 2 ms runs are timed
    assert elapsed < 60.0  # a hang guard
    assert 0 < result["s"].runs <= (0.3 + 0.2) / 0.002
    assert progress[-1] == 1.0
    assert all(0.0 <= p <= 1.0 for p in progress)


def test_measure_progress_reaches_one_when_done():
    progress = []
    measure({"s": SleepSession(0.0)}, FEED, min_runs=10, min_seconds=0.0, max_seconds=5.0, on_progress=progress.append)
    assert progress[-1] == 1.0
    assert progress == sorted(progress)


def test_measure_single_session_stats_math():
    lat = benchmark._stats([1.0, 2.0, 3.0, 4.0], first_ms=9.0)
    assert lat.p50 == pytest.approx(2.5)
    assert lat.mean == pytest.approx(2.5)
    assert lat.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert (lat.min, lat.max, lat.runs, lat.first_ms) == (1.0, 4.0, 4, 9.0)
    one = benchmark._stats([5.0], first_ms=5.0)
    assert one.std == 0.0 and one.cv == 0.0 and one.noisy is False


def test_measure_max_seconds_zero_with_progress():
    result = measure({"s": SleepSession(0.0)}, FEED, min_runs=1, min_seconds=0.0, max_seconds=0.0,
                     on_progress=lambda p: None)
    assert result["s"].runs == block_counts(0.0)[1] == benchmark.MAX_BLOCK


def test_block_counts_follow_time():
    assert block_counts(5.0) == (4, 20)  # 20 ms settle, 100 ms block
    assert block_counts(20.0) == (benchmark.SETTLE, benchmark.BLOCK)  # a slow session keeps the minimum counts
    assert block_counts(500.0) == (benchmark.SETTLE, benchmark.BLOCK)
    assert block_counts(0.01) == (benchmark.MAX_BLOCK, benchmark.MAX_BLOCK)
