"""The rows of the review table (one per original and target of every bundle), shared by md and html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..report import TargetResult
from ..stages.benchmark import Latency
from .figures import DASH, NOT_MEASURED, fmt_mb, fmt_ms, fmt_num, num
from .load import LoadedBundle


@dataclass
class Row:
    model: str
    target: str
    profile: str
    runtime: str
    precision: str
    size: str
    p50: str
    p90: str
    p99: str
    speedup: str
    cosine: str
    top1: str
    verdict: str  # pass / fail / "" for the original
    noisy: bool


def rows_of(bundles: Sequence[LoadedBundle]) -> list[Row]:
    """Per bundle: the original (speedup 1.00× when timed), then each target. A figure that is missing
    or not a finite number reads as a dash; latency of a target whose device was not here, "not measured"."""
    rows = []
    for b in bundles:
        r, o = b.parsed, b.parsed.original_latency
        timed = o is not None and num(o.p50) is not None
        rows.append(Row(b.name, "original", r.profile, str(r.original.get("runtime") or ""),
                        str(r.original.get("precision") or ""), fmt_mb(r.original.get("size_bytes")), *_timing(o),
                        "1.00×" if timed else DASH, DASH, DASH, "", bool(o and o.noisy)))
        rows += [_target_row(b.name, r.profile, t) for t in r.targets]
    return rows


def _target_row(model: str, profile: str, t: TargetResult) -> Row:
    top1 = num(t.accuracy.top1_agreement)
    timed = _timing(t.latency) if t.measured else [NOT_MEASURED] * 3
    return Row(model, t.target, t.profile or profile, t.runtime, t.precision, fmt_mb(t.size_bytes), *timed,
               fmt_num(t.speedup_p50, ".2f", "×"), fmt_num(t.accuracy.cosine_min, ".4f"),
               DASH if top1 is None else f"{top1:.1%}", t.verdict, bool(t.latency and t.latency.noisy))


def _timing(lat: Latency | None) -> list[str]:
    """The p50, p90 and p99 cells."""
    return [fmt_ms(None if lat is None else getattr(lat, k)) for k in ("p50", "p90", "p99")]


def measured(entry: dict[str, Any]) -> bool:
    """False for a target whose device was not on the compiling machine (no latency in its report)."""
    return entry.get("latency_measured") is not False


def columns(top1: bool) -> list[str]:
    """The table's headers; top-1 agreement only when some target has it."""
    return (["model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms", "speedup p50",
             "cosine min"] + (["top-1 agreement"] if top1 else []) + ["verdict"])


def has_top1(bundles: Sequence[LoadedBundle]) -> bool:
    return any(num(t.accuracy.top1_agreement) is not None for b in bundles for t in b.parsed.targets)


def noisy_names(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [f"{r.model}/{r.target}" for r in rows_of(bundles) if r.noisy]


def synthetic_names(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [b.name for b in bundles if (b.report.get("data") or {}).get("synthetic")]
