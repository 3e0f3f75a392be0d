"""Slower than the original is not a pass: when INT8 is not clearly faster, the FP32-optimised artifact competes.

Rules:
1. A target gets a second candidate when it builds the profile's INT8 (it has no precision of its own, no
   fixed shapes), its latency was measured, and its INT8 artifact's p50 is less than CLEARLY_FASTER times
   faster than the original's (or below the profile's `min_speedup`). The candidate is the FP32-optimised
   artifact of the same target: the runtime's FP32 recipe, built, verified and loaded the same way.
2. The original, every artifact and the candidates are then timed again, interleaved, in one run; that run's
   figures replace the first run's for every target, so each ratio in the report comes from one run.
3. The faster candidate that meets every accuracy budget and the size budget ships in the target's folder;
   the FP32 one must be FP32_MARGIN faster than INT8 to replace it (within noise the smaller artifact stays).
   The other is dropped. With none meeting them, the INT8 artifact stays. The report lists the candidates with their
   figures (`candidates` in report.json), and the notes say which shipped and why.
4. A target whose INT8 artifact is still slower than `min_speedup` after this fails that budget: the
   verdict never passes a compile that made a model slower without saying so.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Callable

from .build import Built, Context, accuracy_met, build_target
from .stages import benchmark

CLEARLY_FASTER = 1.1  # below this speedup over the original, INT8 is not clearly worth its accuracy cost
# FP32 replaces INT8 only when it is clearly faster than INT8 too: within the noise of a shared host the smaller
# INT8 artifact stays, so two builds on one machine do not ship different artifacts for a coin-flip difference.
FP32_MARGIN = 1.1


def _speedup(original: benchmark.Latency | None, latency: benchmark.Latency | None) -> float | None:
    if original is None or latency is None or latency.p50 <= 0:
        return None
    return original.p50 / latency.p50


def wants_candidate(b: Built, original: benchmark.Latency | None, latency: benchmark.Latency | None,
                    min_speedup: float | None) -> bool:
    """Rule 1 (a profile may turn it off: `fp32_candidate = false`, e.g. when the INT8 size is the point)."""
    speedup = _speedup(original, latency)
    if b.precision != "int8" or b.target.precision is not None or b.variant is not None or speedup is None:
        return False
    return speedup < max(CLEARLY_FASTER, min_speedup or 0.0)


def compete(ctx: Context, built: list[Built], latencies: dict, measure: Callable[[dict[str, Built]], tuple[dict, dict]],
            throughput: dict) -> tuple[list[Built], dict, dict]:
    """Rules 1-3: (the artifacts to ship, the latencies and throughput they are reported with)."""
    original, min_speedup = latencies.get("original"), ctx.profile.budgets.min_speedup
    slow = [b for b in built if wants_candidate(b, original, latencies.get(b.target.name), min_speedup)]
    if not slow or not ctx.profile.fp32_candidate:
        return built, latencies, throughput
    rivals: dict[str, Built] = {}
    for b in slow:
        ctx.progress.stage(f"{b.target.name}: INT8 runs at {_speedup(original, latencies[b.target.name]):.2f}× the original; "
                           "building the FP32-optimised artifact to compare")
        folder = ctx.workdir / "candidates" / b.target.name
        rivals[b.target.name] = build_target(ctx, b.target, "fp32", b.present, None, folder=folder)
    named = {b.target.name: b for b in built} | {_rival(name): r for name, r in rivals.items()}
    latencies, throughput = measure(named)
    shipped = [_choose(ctx, b, rivals.get(b.target.name), latencies, throughput) for b in built]
    return shipped, latencies, throughput


def _rival(name: str) -> str:
    return f"{name} (fp32 candidate)"


def _choose(ctx: Context, b: Built, rival: Built | None, latencies: dict, throughput: dict) -> Built:
    """Rule 3: the fastest candidate that meets the accuracy budgets, moved into the target's folder."""
    if rival is None:
        return b
    name, original = b.target.name, latencies.get("original")
    entries = [(b, latencies.get(name)), (rival, latencies.get(_rival(name)))]
    met = {id(c): _eligible(ctx, c) for c, _ in entries}
    winner = _faster(entries, met)
    record = [{"precision": c.precision, "p50_ms": lat.p50 if lat else None, "speedup_p50": _speedup(original, lat),
               "cosine_min": c.fidelity.cosine_min, "budgets_met": met[id(c)], "shipped": c is winner}
              for c, lat in entries]
    note = (f"candidates: INT8 at {_figure(record[0])}, FP32-optimised at {_figure(record[1])}, timed side by side; "
            + ("the FP32-optimised artifact ships: INT8 was not faster" if winner is rival
               else "INT8 ships" + ("" if met[id(b)] else " (no candidate met the accuracy and size budgets)")))
    if winner is rival:
        folder = b.artifact.parent
        shutil.rmtree(folder)
        shutil.move(str(rival.artifact.parent), str(folder))
        latencies[name], throughput[name] = latencies.pop(_rival(name)), throughput.pop(_rival(name), {})
        winner = dataclasses.replace(rival, artifact=folder / rival.artifact.name)
    else:
        latencies.pop(_rival(name), None)
        throughput.pop(_rival(name), None)
        shutil.rmtree(rival.artifact.parent, ignore_errors=True)
    return dataclasses.replace(winner, notes=winner.notes + [note], candidates=record)


def _faster(entries: list, met: dict) -> Built:
    """Rule 3: INT8 unless it misses a budget the FP32 artifact meets, or the FP32 artifact is FP32_MARGIN faster."""
    (int8, int8_lat), (fp32, fp32_lat) = entries
    if not met[id(fp32)] or fp32_lat is None:
        return int8
    if not met[id(int8)] or int8_lat is None:
        return fp32
    return fp32 if fp32_lat.p50 * FP32_MARGIN < int8_lat.p50 else int8


def _eligible(ctx: Context, candidate: Built) -> bool:
    """Rule 3: every accuracy budget met, and the size budget (the INT8 size may be the point)."""
    budgets = ctx.profile.budgets
    small = budgets.max_size_mb is None or candidate.size / 1e6 <= budgets.max_size_mb
    return small and accuracy_met(budgets, candidate.fidelity, candidate.task_figures, ctx.secondary)


def _figure(entry: dict) -> str:
    speedup = entry["speedup_p50"]
    return f"{entry['p50_ms']:.3g} ms ({speedup:.2f}×)" if speedup is not None else "not timed"
