"""Judge: each budget of the profile against the measured figure, and the verdict.

A budget that cannot be measured for an artifact (top-1 agreement of an embedding model) is not
applicable and does not count. The verdict is `pass` only when every applicable budget passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import Budgets


@dataclass
class Check:
    budget: str
    limit: float
    measured: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def judge(budgets: Budgets, cosine_min: float, top1: float | None, latency_p90_ms: float, size_bytes: int) -> list[Check]:
    checks = [Check("min_cosine", budgets.min_cosine, cosine_min, cosine_min >= budgets.min_cosine)]
    if budgets.min_top1_agreement is not None and top1 is not None:
        checks.append(Check("min_top1_agreement", budgets.min_top1_agreement, top1, top1 >= budgets.min_top1_agreement))
    if budgets.max_latency_ms is not None:
        checks.append(Check("max_latency_ms", budgets.max_latency_ms, latency_p90_ms, latency_p90_ms <= budgets.max_latency_ms))
    if budgets.max_size_mb is not None:
        size_mb = size_bytes / 1e6
        checks.append(Check("max_size_mb", budgets.max_size_mb, size_mb, size_mb <= budgets.max_size_mb))
    return checks


def verdict(checks: list[Check]) -> str:
    return "pass" if all(c.passed for c in checks) else "fail"
