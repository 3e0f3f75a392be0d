"""Figures read from a report dict and formatted for a table cell: anything missing, non-numeric or
non-finite reads as a dash."""

from __future__ import annotations

import math
from typing import Any

DASH = "—"
NOT_MEASURED = "not measured"


def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def lat_figure(entry: dict[str, Any], key: str) -> float | None:
    return num((entry.get("latency_ms") or {}).get(key))


def acc_figure(entry: dict[str, Any], key: str) -> float | None:
    return num((entry.get("accuracy") or {}).get(key))


def latency_samples(entry: dict[str, Any]) -> list[float]:
    raw = entry.get("latency_samples_ms")
    if not isinstance(raw, list):
        return []
    return [v for v in (num(x) for x in raw) if v is not None and v >= 0]


def fmt_num(value: Any, spec: str, suffix: str = "") -> str:
    number = num(value)
    return DASH if number is None else f"{number:{spec}}{suffix}"


def fmt_ms(value: Any) -> str:
    number = num(value)
    if number is None:
        return DASH
    return f"{number:.0f}" if abs(number) >= 100 else f"{number:#.3g}"


def fmt_mb(size_bytes: Any) -> str:
    number = num(size_bytes)
    if number is None:
        return DASH
    mb = number / 1e6
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


def fmt_pct(value: float | None) -> str:
    return DASH if value is None else f"{value:+.1%}"


def budget_limit(entry: dict[str, Any], name: str) -> float | None:
    for check in entry.get("budgets") or []:
        if isinstance(check, dict) and check.get("budget") == name:
            return num(check.get("limit"))
    return None
