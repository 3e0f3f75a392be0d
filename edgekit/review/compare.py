"""Comparison: new bundles against a baseline, target by target (matched by target and profile)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import UsageError
from .figures import fmt_ms, fmt_num, fmt_pct
from .load import LoadedBundle
from .records import ReportRecord, TargetRecord, read_report

DEFAULT_MAX_REGRESSION = 0.05
DEFAULT_MAX_COSINE_DROP = 0.005
_EPS = 1e-12  # "more than 5%" must not trip on the rounding of exactly 5%


def parse_fraction(text: str | float, option: str = "--max-regression") -> float:
    """'5%' -> 0.05, '0.05' -> 0.05. A bare number above 1 is refused: write 5% for five percent."""
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1].strip() if percent else raw)
    except ValueError:
        value = math.nan
    if percent:
        value /= 100.0
    if not math.isfinite(value) or value < 0 or (not percent and value > 1):
        raise UsageError(f"{option}: {text!r} is not a fraction (0.05) or a percentage (5%) between 0 and 100%")
    return value


Metric = tuple[str, str, Callable[[TargetRecord], Optional[float]], bool]
METRICS: tuple[Metric, ...] = (  # name, label, the figure of a target, higher is worse
    ("p50_ms", "p50 ms", lambda t: t.latency.p50, True),
    ("p90_ms", "p90 ms", lambda t: t.latency.p90, True),
    ("size_bytes", "size bytes", lambda t: t.size_bytes, True),
    ("cosine_min", "cosine min", lambda t: t.accuracy.cosine_min, False),
)


@dataclass
class Change:
    metric: str
    old: float | None
    new: float | None
    delta: float | None
    relative: float | None
    regression: bool

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "old": self.old, "new": self.new, "delta": self.delta,
                "relative": self.relative, "regression": self.regression}


@dataclass
class TargetDiff:
    target: str
    profile: str
    model: str
    changes: list[Change]

    @property
    def regressed(self) -> bool:
        return any(c.regression for c in self.changes)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "profile": self.profile, "model": self.model, "regressed": self.regressed,
                "changes": [c.to_dict() for c in self.changes]}


@dataclass
class Comparison:
    baseline: str
    max_regression: float
    max_cosine_drop: float
    pairs: list[TargetDiff]
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(p.regressed for p in self.pairs)

    def summary(self) -> str:
        """One line naming every regression, for stderr."""
        parts = []
        for p in self.pairs:
            for c in p.regressions:
                what = f"{c.delta:+.4f}" if c.metric == "cosine_min" else fmt_pct(c.relative)
                parts.append(f"{p.target}/{p.profile} {c.metric} {what}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "max_regression": self.max_regression, "max_cosine_drop": self.max_cosine_drop,
                "regressed": self.regressed, "targets": [p.to_dict() for p in self.pairs], "notes": self.notes}


def _change(metric: str, old: float | None, new: float | None, higher_is_worse: bool, max_regression: float,
            max_cosine_drop: float) -> Change:
    if old is None or new is None:
        return Change(metric, old, new, None, None, False)
    delta = new - old
    relative = delta / old if old != 0 else None
    if higher_is_worse:
        regression = relative is not None and relative > max_regression + _EPS
    else:
        regression = -delta > max_cosine_drop + _EPS
    return Change(metric, old, new, delta, relative, regression)


def _as_reports(side: Any) -> list[tuple[str, ReportRecord]]:
    """A LoadedBundle, a report dict (read as a bundle's is), or a list of either -> [(model, record)]."""
    items = side if isinstance(side, (list, tuple)) else [side]
    out = []
    for item in items:
        if isinstance(item, LoadedBundle):
            out.append((item.model, item.record))
        else:
            record = read_report(item, "report")
            out.append((record.model, record))
    return out


def _index(side: list[tuple[str, ReportRecord]], which: str) -> dict[tuple[str, str], tuple[str, TargetRecord]]:
    index: dict[tuple[str, str], tuple[str, TargetRecord]] = {}
    for model, report in side:
        for t in report.targets:
            key = (t.target, t.profile or report.profile or "")
            if key in index:
                raise UsageError(f"target {key[0]!r} with profile {key[1]!r} appears twice in the {which} bundles; "
                                 "--baseline compares one bundle per target and profile")
            index[key] = (model, t)
    return index


def compare(new: Any, old: Any, max_regression: float = DEFAULT_MAX_REGRESSION,
            max_cosine_drop: float = DEFAULT_MAX_COSINE_DROP, baseline_name: str | None = None) -> Comparison:
    """New against old, target by target (matched by target name and profile)."""
    new_side, old_side = _as_reports(new), _as_reports(old)
    new_index, old_index = _index(new_side, "new"), _index(old_side, "baseline")
    pairs, notes = [], []
    for key, (model, t_new) in new_index.items():
        if key not in old_index:
            notes.append(f"{key[0]} (profile {key[1]}): not in baseline")
            continue
        t_old = old_index[key][1]
        changes = [_change(name, read(t_old), read(t_new), worse, max_regression, max_cosine_drop)
                   for name, _, read, worse in METRICS]
        pairs.append(TargetDiff(key[0], key[1], model, changes))
    for key in old_index:
        if key not in new_index:
            notes.append(f"{key[0]} (profile {key[1]}): missing from new")
    new_models = sorted({m for m, _ in new_side})
    old_models = sorted({m for m, _ in old_side})
    if pairs and new_models != old_models:
        notes.append(f"the baseline is of {', '.join(old_models)}, the new bundle(s) of {', '.join(new_models)}")
    if baseline_name is None:
        baseline_name = ", ".join(str(b.path) for b in (old if isinstance(old, (list, tuple)) else [old])
                                  if isinstance(b, LoadedBundle)) or "baseline"
    return Comparison(baseline_name, max_regression, max_cosine_drop, pairs, notes)


def change_cells(c: Change) -> tuple[str, str, str]:
    if c.metric == "size_bytes":
        old, new = fmt_num(c.old, ",.0f"), fmt_num(c.new, ",.0f")
    elif c.metric == "cosine_min":
        old, new = fmt_num(c.old, ".4f"), fmt_num(c.new, ".4f")
    else:
        old, new = fmt_ms(c.old), fmt_ms(c.new)
    change = fmt_pct(c.relative)
    if c.metric == "cosine_min" and c.delta is not None:
        change = f"{c.delta:+.4f}"
    return old, new, change
