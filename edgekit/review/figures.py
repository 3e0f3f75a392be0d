"""Figures formatted for a table cell. A figure is a finite number or None (`records` reads every figure
of a report once: missing, non-numeric or non-finite is None); None reads as a dash."""

from __future__ import annotations

DASH = "—"
NOT_MEASURED = "not measured"


def fmt_num(value: float | None, spec: str, suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:#.3g}"


def fmt_mb(size_bytes: float | None) -> str:
    if size_bytes is None:
        return DASH
    mb = size_bytes / 1e6
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


def fmt_pct(value: float | None) -> str:
    return DASH if value is None else f"{value:+.1%}"
