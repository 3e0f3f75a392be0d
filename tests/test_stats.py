"""Intervals: Wilson against published values, the paired drop, the bootstrap, and when a drop budget is decided."""

import math

import numpy as np
import pytest

from edgekit import stats


def test_wilson_matches_published_values():
    # Newcombe (1998), table I: 81 of 263 -> 0.2553 to 0.3662; 15 of 148 -> 0.0624 to 0.1605
    assert stats.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert stats.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    lo, hi = stats.wilson(0, 32)  # nothing seen on 32 samples is not "certainly nothing"
    assert lo == 0.0 and hi == pytest.approx(0.1072, abs=1e-4)
    with pytest.raises(ValueError):
        stats.wilson(0, 0)


def test_the_paired_drop_is_narrow_only_with_many_agreeing_samples():
    few = stats.paired_drop([True] * 32, [True] * 32)
    many = stats.paired_drop([True] * 600, [True] * 600)
    assert few[1] > 0.1 and many[1] < 0.01
    # three samples the artifact loses, one it gains, out of 200: the drop 0.01 lies inside
    ref = np.array([True] * 3 + [False] + [True] * 196)
    art = np.array([False] * 3 + [True] + [True] * 196)
    lo, hi = stats.paired_drop(ref, art)
    assert lo < 0.01 < hi and hi - lo < 0.07


def test_bootstrap_is_reproducible_and_covers_the_statistic():
    values = np.random.default_rng(3).random(200)
    a = stats.bootstrap(lambda i: float(np.mean(values[i])), values.size)
    b = stats.bootstrap(lambda i: float(np.mean(values[i])), values.size)
    assert a == b and a[0] < float(np.mean(values)) < a[1]
    assert all(math.isnan(v) for v in stats.bootstrap(lambda i: math.nan, 5))


@pytest.mark.parametrize("drop, interval, decision", [
    (0.0, (-0.02, 0.009), "pass"),
    (0.0, (-0.1, 0.107), "undecided"),
    (0.03, (0.01, 0.05), "fail"),
    (0.01, None, "pass"),  # no interval: the figure alone decides
])
def test_decide_drop(drop, interval, decision):
    assert stats.decide_drop(drop, interval, 0.01) == decision
