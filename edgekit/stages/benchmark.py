"""Benchmark: batch-1 latency of the original and every artifact, measured interleaved in one run.

Rules:
1. Each session runs once untimed for its first-inference latency (reported apart), then warms up in
   rounds of 5 until the median of a round is within 10% of the round before (at most 10 rounds).
2. Timed runs go round-robin, a block of 5 iterations per session in turn, so drift of a shared
   machine hits every session alike. Timing stops when every session has `min_runs` and `min_seconds`
   has passed, or at `max_seconds`.
3. Percentiles, mean, standard deviation, min, max and the coefficient of variation are reported;
   a coefficient of variation above 0.25 marks the figure as noisy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..runtimes import Feed, Session

BLOCK = 5
NOISY_CV = 0.25


@dataclass
class Latency:
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    cv: float
    runs: int
    first_ms: float
    noisy: bool
    samples_ms: list[float] = field(default_factory=list)  # every timed run, in order

    def to_dict(self) -> dict:
        return asdict(self)


def _stats(samples_ms: list[float], first_ms: float) -> Latency:
    a = np.asarray(samples_ms)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    p50, p90, p95, p99 = (float(np.percentile(a, q)) for q in (50, 90, 95, 99))
    cv = std / mean if mean > 0 else 0.0
    return Latency(p50, p90, p95, p99, mean, std, float(a.min()), float(a.max()), cv, int(a.size), first_ms, cv > NOISY_CV,
                   [float(x) for x in a])


def _timed(session: Session, feed: Feed, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        session.run(feed)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def measure(sessions: dict[str, Session], feed: Feed, min_runs: int = 50, min_seconds: float = 2.0,
            max_seconds: float = 20.0, on_progress: Callable[[float], None] | None = None) -> dict[str, Latency]:
    first = {name: _timed(s, feed, 1)[0] for name, s in sessions.items()}
    for session in sessions.values():
        previous = None
        for _ in range(10):
            current = float(np.median(_timed(session, feed, BLOCK)))
            if previous is not None and abs(current - previous) <= 0.1 * previous:
                break
            previous = current
    times: dict[str, list[float]] = {name: [] for name in sessions}
    start = time.perf_counter()
    while True:
        for name, session in sessions.items():
            times[name] += _timed(session, feed, BLOCK)
        elapsed = time.perf_counter() - start
        done_runs = min(len(t) for t in times.values())
        if on_progress:
            need = min(done_runs / min_runs, elapsed / min_seconds if min_seconds else 1.0)
            on_progress(min(1.0, max(need, elapsed / max_seconds if max_seconds > 0 else 1.0)))
        if (done_runs >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    return {name: _stats(t, first[name]) for name, t in times.items()}
