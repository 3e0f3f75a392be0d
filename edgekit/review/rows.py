"""The rows of the review table (one per original and target of every bundle), shared by md and html."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .figures import DASH, NOT_MEASURED, fmt_mb, fmt_ms, fmt_num
from .load import LoadedBundle
from .records import LatencyFigures, TargetRecord


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
    """Per bundle: the original (speedup 1.00× when timed), then each target. A figure the report lacks
    reads as a dash; latency of a target whose device was not here, "not measured"."""
    rows = []
    for b in bundles:
        r, o = b.record, b.record.original
        profile = r.profile or ""
        rows.append(Row(b.name, "original", profile, o.runtime or "", o.precision or "", fmt_mb(o.size_bytes),
                        *_timing(o.latency), "1.00×" if o.latency.p50 is not None else DASH, DASH, DASH, "", o.noisy))
        rows += [_target_row(b.name, profile, t) for t in r.targets]
    return rows


def _target_row(model: str, profile: str, t: TargetRecord) -> Row:
    top1 = t.accuracy.top1_agreement
    timed = _timing(t.latency) if t.measured else [NOT_MEASURED] * 3
    return Row(model, t.target, t.profile or profile, t.runtime or "", t.precision or "", fmt_mb(t.size_bytes), *timed,
               fmt_num(t.speedup_p50, ".2f", "×"), fmt_num(t.accuracy.cosine_min, ".4f"),
               DASH if top1 is None else f"{top1:.1%}", t.verdict or "", t.noisy)


def _timing(lat: LatencyFigures) -> list[str]:
    """The p50, p90 and p99 cells."""
    return [fmt_ms(lat.p50), fmt_ms(lat.p90), fmt_ms(lat.p99)]


def columns(top1: bool) -> list[str]:
    """The table's headers; top-1 agreement only when some target has it."""
    return (["model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms", "speedup p50",
             "cosine min"] + (["top-1 agreement"] if top1 else []) + ["verdict"])


def has_top1(bundles: Sequence[LoadedBundle]) -> bool:
    return any(t.accuracy.top1_agreement is not None for b in bundles for t in b.record.targets)


def noisy_names(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [f"{r.model}/{r.target}" for r in rows_of(bundles) if r.noisy]


def synthetic_names(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [b.name for b in bundles if b.record.data.synthetic]


GENERATION_COLUMNS = ("model", "target", "TTFT p50 / p90 ms", "TPOT p50 ms", "tokens/s", "perplexity", "ppl Δ",
                      "next-token agreement", "KL mean", "verdict")


def _timing_cells(timing: dict | None) -> list[str]:
    if not isinstance(timing, dict) or not isinstance(timing.get("ttft_ms"), dict):
        return [NOT_MEASURED] * 3
    ttft, tpot = timing["ttft_ms"], timing.get("tpot_ms") or {}
    return [f"{fmt_num(ttft.get('p50'), '.1f')} / {fmt_num(ttft.get('p90'), '.1f')}", fmt_num(tpot.get("p50"), ".2f"),
            fmt_num(timing.get("tokens_per_s"), ".1f")]


def generation_rows(bundles: Sequence[LoadedBundle]) -> list[list[str]]:
    """Generative models (tasks/generation.py): the original and each target's generation figures, per bundle."""
    rows = []
    for b in bundles:
        targets = [t for t in b.report.get("targets", []) if isinstance(t, dict)
                   and isinstance((t.get("accuracy") or {}).get("generation"), dict)]
        if not targets:
            continue
        first = targets[0]["accuracy"]["generation"]
        rows.append([b.name, "original", *_timing_cells((b.report.get("original") or {}).get("generation")),
                     fmt_num(first.get("ppl_original"), ".3f"), DASH, DASH, DASH, DASH])
        for t in targets:
            g, agreement = t["accuracy"]["generation"], t["accuracy"].get("token_agreement")
            rows.append([b.name, str(t.get("target")), *_timing_cells(t.get("generation")), fmt_num(g.get("ppl_artifact"), ".3f"),
                         fmt_num(100 * g["ppl_increase"], "+.2f") + "%" if isinstance(g.get("ppl_increase"), (int, float)) else DASH,
                         fmt_num(100 * agreement, ".1f") + "%" if isinstance(agreement, (int, float)) else DASH,
                         fmt_num(g.get("kl_mean"), ".4f"), str(t.get("verdict") or DASH)])
    return rows
