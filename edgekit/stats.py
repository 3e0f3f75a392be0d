"""How sure a figure is: 95% intervals for proportions, paired differences and bootstrapped statistics.

Rules:
1. A proportion (accuracy, top-1 agreement: k of n samples) gets Wilson's score interval, which stays
   honest at 0 or n successes (0 of 32 is not "certainly 0": its upper end is 0.107).
2. The drop original − artifact of a proportion is computed on the same samples (paired): only the
   discordant samples move it. Its interval combines the Wilson intervals of the two discordant rates
   (original right and artifact wrong; the reverse): [lo10 − hi01, hi10 − lo01]. It is conservative, and it
   stays wide when few samples were evaluated even if none disagreed.
3. A statistic that is not a proportion (macro-F1, retrieval agreement) gets a percentile bootstrap over the
   samples, paired for a difference (the same resampled samples for both), with a fixed seed so a rerun
   gives the same interval.
4. A drop budget is decided only when the interval says so: `pass` when the interval's upper end meets the
   limit, `fail` when the drop itself misses it, and otherwise **undecided**: too few samples to tell.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 0

Interval = tuple[float, float]


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """Rule 1: the Wilson score interval of `successes` out of `n` (n ≥ 1)."""
    if n <= 0:
        raise ValueError("an interval of no samples")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_drop(original_right: Sequence[bool], artifact_right: Sequence[bool]) -> Interval:
    """Rule 2: the interval of mean(original_right) − mean(artifact_right) over the same samples."""
    a, b = np.asarray(original_right, dtype=bool), np.asarray(artifact_right, dtype=bool)
    n = int(a.size)
    lo10, hi10 = wilson(int(np.sum(a & ~b)), n)
    lo01, hi01 = wilson(int(np.sum(~a & b)), n)
    return lo10 - hi01, hi10 - lo01


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, rounds: int = BOOTSTRAP_ROUNDS,
              seed: int = BOOTSTRAP_SEED) -> Interval:
    """Rule 3: the 2.5th and 97.5th percentiles of `statistic(indices)` over `rounds` resamples of 0..n-1."""
    if n <= 0:
        raise ValueError("an interval of no samples")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(rounds)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def decide_drop(drop: float, interval: Interval | None, limit: float, tolerance: float = 1e-9) -> str:
    """Rule 4: "pass", "fail" or "undecided" for a drop budget `limit`; no interval: the figure alone decides."""
    if drop > limit + tolerance:
        return "fail"
    if interval is None or not math.isfinite(interval[1]) or interval[1] <= limit + tolerance:
        return "pass"
    return "undecided"


def as_list(interval: Interval) -> list[float]:
    """An interval as report.json writes it: [low, high], rounded to 6 places."""
    return [round(float(interval[0]), 6), round(float(interval[1]), 6)]
