"""Benchmark: batch-1 latency of the original and every artifact, measured interleaved in one run.

Rules:
1. Each session runs once untimed for its first-inference latency (reported apart), then warms up in
   rounds of 5 until the median of a round is within 10% of the round before (at most 10 rounds).
2. Timed runs go round-robin, a block per session in turn, so drift of a shared machine hits every
   session alike. A block lasts about `BLOCK_MS` (at least `BLOCK` runs) and starts with about
   `SETTLE_MS` of untimed runs (at least `SETTLE`), each session's counts set from its warm-up median:
   runtimes keep their worker threads spinning for a while after a run (ONNX Runtime, OpenMP in
   PyTorch) and evict each other's weights from the caches, and a fixed count of runs is too short for
   the fastest session to recover (measured on all-MiniLM-L6-v2, 2 cores, interleaved with PyTorch and
   ONNX Runtime: the OpenVINO artifact read 2.9-3.2x with blocks of 5 runs and 3.9-4.0x with 100 ms
   blocks, its speed when run alone). Timing stops when every session has `min_runs` and
   `min_seconds` has passed, or at `max_seconds`.
3. Percentiles, mean, standard deviation, min, max and the coefficient of variation are reported;
   a coefficient of variation above 0.25 marks the figure as noisy.
4. Throughput at batch B repeats the batch-1 feed B times along the first axis and times the
   sessions interleaved the same way; a session whose input shape is fixed at batch 1 reports why it
   has no figure instead of failing the run.
5. Resident memory is the growth of this process's resident set from before a session is loaded to
   after its first inference: what loading and serving that model costs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..errors import first_line
from ..runtimes import Feed, Session

BLOCK = 5  # timed runs per block, at least
SETTLE = 2  # untimed runs before each block, at least
BLOCK_MS = 100.0  # a block's length in time, about
SETTLE_MS = 20.0  # the untimed runs' length in time, about
MAX_BLOCK = 1000  # runs per block, at most (sub-millisecond sessions)
NOISY_CV = 0.25  # rule 3
NOISY_RULE = f"coefficient of variation > {NOISY_CV:.0%}"  # how every report words rule 3


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


def is_noisy(cv: float) -> bool:
    """Rule 3: a coefficient of variation above `NOISY_CV` marks the latency as too spread to trust."""
    return cv > NOISY_CV


def noisy_note(named: Iterable[tuple[str, Latency | None]]) -> str:
    """The note naming every noisy latency of (name, latency) pairs; "" when none is noisy (None: not measured)."""
    noisy = [name for name, lat in named if lat is not None and lat.noisy]
    return f"latency spread too wide to trust ({NOISY_RULE}) for: {', '.join(noisy)}" if noisy else ""


def _stats(samples_ms: list[float], first_ms: float) -> Latency:
    a = np.asarray(samples_ms)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    p50, p90, p95, p99 = (float(np.percentile(a, q)) for q in (50, 90, 95, 99))
    cv = std / mean if mean > 0 else 0.0
    return Latency(p50, p90, p95, p99, mean, std, float(a.min()), float(a.max()), cv, int(a.size), first_ms, is_noisy(cv),
                   [float(x) for x in a])


def _timed(session: Session, feed: Feed, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        session.run(feed)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def block_counts(typical_ms: float) -> tuple[int, int]:
    """(untimed settle runs, timed runs) of one block for a session whose run takes `typical_ms` (rule 2)."""
    per_run = max(typical_ms, 1e-3)
    settle = min(MAX_BLOCK, max(SETTLE, math.ceil(SETTLE_MS / per_run)))
    return settle, min(MAX_BLOCK, max(BLOCK, math.ceil(BLOCK_MS / per_run)))


def measure(sessions: dict[str, Session], feed: Feed, min_runs: int = 50, min_seconds: float = 2.0,
            max_seconds: float = 20.0, on_progress: Callable[[float], None] | None = None) -> dict[str, Latency]:
    first = {name: _timed(s, feed, 1)[0] for name, s in sessions.items()}
    counts: dict[str, tuple[int, int]] = {}
    for name, session in sessions.items():
        previous = None
        for _ in range(10):
            current = float(np.median(_timed(session, feed, BLOCK)))
            if previous is not None and abs(current - previous) <= 0.1 * previous:
                break
            previous = current
        counts[name] = block_counts(current)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    start = time.perf_counter()
    while True:
        for name, session in sessions.items():
            settle, block = counts[name]
            _timed(session, feed, settle)  # untimed: the previous session's threads may still be spinning
            times[name] += _timed(session, feed, block)
        elapsed = time.perf_counter() - start
        done_runs = min(len(t) for t in times.values())
        if on_progress:
            need = min(done_runs / min_runs, elapsed / min_seconds if min_seconds else 1.0)
            on_progress(min(1.0, max(need, elapsed / max_seconds if max_seconds > 0 else 1.0)))
        if (done_runs >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    return {name: _stats(t, first[name]) for name, t in times.items()}


@dataclass
class Throughput:
    batch: int
    per_second: float | None  # samples per second
    p50_ms: float | None  # latency of one batch
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def batch_feed(feed: Feed, batch: int) -> Feed:
    return {k: np.ascontiguousarray(np.repeat(v, batch, axis=0)) for k, v in feed.items()}


def measure_throughput(sessions: dict[str, Session], feed: Feed, batches: list[int], min_runs: int = 10,
                       min_seconds: float = 1.0, max_seconds: float = 10.0) -> dict[str, dict[int, Throughput]]:
    """Samples per second at each batch size > 1, the sessions interleaved as for latency."""
    result: dict[str, dict[int, Throughput]] = {name: {} for name in sessions}
    for batch in sorted({b for b in batches if b > 1}):
        feeds = batch_feed(feed, batch)
        usable = {}
        for name, session in sessions.items():
            try:
                session.run(feeds)
            except Exception as exc:  # a static batch dimension, or a runtime limit
                first = first_line(exc)
                result[name][batch] = Throughput(batch, None, None, f"batch {batch} not runnable: {first[:160]}")
            else:
                usable[name] = session
        if usable:
            for name, lat in measure(usable, feeds, min_runs, min_seconds, max_seconds).items():
                result[name][batch] = Throughput(batch, batch * 1e3 / lat.p50, lat.p50)
    return result


def resident_mb() -> float:
    """This process's resident set size in MB (0.0 where the platform does not say)."""
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 1e6
    except Exception:
        return 0.0
