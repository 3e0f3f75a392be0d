"""Budgets against measured figures, and the verdict."""

from __future__ import annotations

import pytest

from edgekit.config import Budgets
from edgekit.judge import Check, judge, verdict

ALL = Budgets(min_cosine=0.98, min_top1_agreement=0.9, max_latency_ms=10.0, max_size_mb=5.0)


def by_name(checks):
    return {c.budget: c for c in checks}


def test_all_budgets_pass():
    checks = judge(ALL, cosine_min=0.99, top1=0.95, latency_p90_ms=8.0, size_bytes=4_000_000)
    assert [c.budget for c in checks] == ["min_cosine", "min_top1_agreement", "max_latency_ms", "max_size_mb"]
    assert all(c.passed for c in checks)
    assert verdict(checks) == "pass"
    c = by_name(checks)
    assert (c["min_cosine"].limit, c["min_cosine"].measured) == (0.98, 0.99)
    assert (c["min_top1_agreement"].limit, c["min_top1_agreement"].measured) == (0.9, 0.95)
    assert (c["max_latency_ms"].limit, c["max_latency_ms"].measured) == (10.0, 8.0)
    assert c["max_size_mb"].measured == pytest.approx(4.0)  # size in MB = bytes / 1e6


@pytest.mark.parametrize("failing, kwargs", [
    ("min_cosine", dict(cosine_min=0.97)),
    ("min_top1_agreement", dict(top1=0.85)),
    ("max_latency_ms", dict(latency_p90_ms=10.5)),
    ("max_size_mb", dict(size_bytes=5_000_001)),
])
def test_each_budget_fails_alone(failing, kwargs):
    figures = dict(cosine_min=0.99, top1=0.95, latency_p90_ms=8.0, size_bytes=4_000_000) | kwargs
    checks = judge(ALL, **figures)
    assert {c.budget for c in checks if not c.passed} == {failing}
    assert verdict(checks) == "fail"


def test_limits_are_inclusive():
    checks = judge(ALL, cosine_min=0.98, top1=0.9, latency_p90_ms=10.0, size_bytes=5_000_000)
    assert all(c.passed for c in checks)
    assert verdict(checks) == "pass"


def test_none_budgets_are_skipped():
    budgets = Budgets(min_cosine=0.9)
    checks = judge(budgets, cosine_min=0.95, top1=0.1, latency_p90_ms=1e9, size_bytes=10**12)
    assert [c.budget for c in checks] == ["min_cosine"]
    assert verdict(checks) == "pass"


def test_top1_budget_not_applicable_when_not_measurable():
    checks = judge(ALL, cosine_min=0.99, top1=None, latency_p90_ms=8.0, size_bytes=1)
    top1 = by_name(checks)["min_top1_agreement"]
    assert (top1.applicable, top1.passed, top1.measured) == (False, None, None)
    assert top1.reason
    assert len(checks) == 4
    assert verdict(checks) == "pass"  # listed, but it does not count


def test_cosine_failure_still_reported_with_other_passes():
    checks = judge(Budgets(min_cosine=0.99, max_latency_ms=5.0), cosine_min=0.5, top1=None,
                   latency_p90_ms=1.0, size_bytes=0)
    c = by_name(checks)
    assert c["min_cosine"].passed is False
    assert c["max_latency_ms"].passed is True
    assert verdict(checks) == "fail"


def test_check_to_dict():
    check = Check("max_latency_ms", 10.0, 12.0, False)
    assert check.to_dict() == {"budget": "max_latency_ms", "limit": 10.0, "measured": 12.0, "passed": False, "applicable": True}


def test_verdict():
    assert verdict([Check("a", 1, 1, True), Check("b", 1, 1, True)]) == "pass"
    assert verdict([Check("a", 1, 1, True), Check("b", 1, 2, False)]) == "fail"
    assert verdict([]) == "pass"
