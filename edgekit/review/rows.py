"""The rows of the review table (one per original and target of every bundle), shared by md and html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .figures import DASH, NOT_MEASURED, acc_figure, fmt_mb, fmt_ms, fmt_num, lat_figure
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
    rows = []
    for b in bundles:
        o = b.original
        rows.append(Row(b.name, "original", str(b.report.get("profile") or ""), str(o.get("runtime") or ""),
                        str(o.get("precision") or ""), fmt_mb(o.get("size_bytes")), fmt_ms(lat_figure(o, "p50")),
                        fmt_ms(lat_figure(o, "p90")), fmt_ms(lat_figure(o, "p99")), "1.00×" if lat_figure(o, "p50") is not None else DASH, DASH, DASH, "",
                        bool(o.get("latency_noisy"))))
        for t in b.targets:
            top1 = acc_figure(t, "top1_agreement")
            timed = [fmt_ms(lat_figure(t, k)) for k in ("p50", "p90", "p99")] if measured(t) else [NOT_MEASURED] * 3
            rows.append(Row(b.name, t["target"], str(t.get("profile") or b.report.get("profile") or ""),
                            str(t.get("runtime") or ""), str(t.get("precision") or ""), fmt_mb(t.get("size_bytes")),
                            *timed,
                            fmt_num(t.get("speedup_p50"), ".2f", "×"), fmt_num(acc_figure(t, "cosine_min"), ".4f"),
                            DASH if top1 is None else f"{top1:.1%}", str(t.get("verdict") or ""),
                            bool(t.get("latency_noisy"))))
    return rows


def measured(entry: dict[str, Any]) -> bool:
    """False for a target whose device was not on the compiling machine (no latency in its report)."""
    return entry.get("latency_measured") is not False


def columns(top1: bool) -> list[str]:
    """The table's headers; top-1 agreement only when some target has it."""
    return (["model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms", "speedup p50",
             "cosine min"] + (["top-1 agreement"] if top1 else []) + ["verdict"])


def has_top1(bundles: Sequence[LoadedBundle]) -> bool:
    return any(acc_figure(t, "top1_agreement") is not None for b in bundles for t in b.targets)


def noisy_names(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [f"{r.model}/{r.target}" for r in rows_of(bundles) if r.noisy]


def synthetic_names(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [b.name for b in bundles if (b.report.get("data") or {}).get("synthetic")]
