"""Judge: each budget of the profile against the measured figure, and the verdict.

Rules:
1. Every budget the profile sets yields one check, with its limit, the measured figure and pass/fail.
2. `max_drop.<metric>`: original − artifact ≤ limit. `min_relative.<metric>`: artifact ≥ limit × original
   (measured = artifact / original, 1 when the original scores 0). Agreement metrics use original = 1.
3. A budget whose figure cannot be measured for an artifact (accuracy without labels, top-1 agreement
   of an embedding model) is listed as not applicable, with the reason; it neither passes nor fails.
4. Limits are inclusive (within 1e-9, so 0.8 − 0.75 meets a drop budget of 0.05).
5. The verdict is `pass` only when every applicable budget passes.
6. `min_speedup`: the p50 of the original over the artifact's, from the same interleaved run, within
   SPEEDUP_NOISE of the limit. A target whose device is not on this machine has no latency: a latency or
   speedup budget on it is listed as not checked, with the reason, and does not decide the verdict; with
   `require_measured` the target gets a failing `require_measured` check instead, so the verdict is `fail`.
7. Rule 3 holds only for budgets a profile sets: a budget asked for on the command line or in a project
   file that cannot be measured for the model is a usage error, found before any target is built
   (`unmeasurable`: the original judged against itself shows which budgets apply).
8. A drop budget with a 95% interval (stats.py) is decided by it: met when the interval's upper end meets the
   limit, missed when the drop does not, and otherwise **undecided: too few samples**, which fails unless the
   profile's `allow_undecided` is set.
9. A task family may name budgets it reports but does not gate on (`secondary`): a classifier is decided by
   top-1 agreement and the accuracy drop, and its logit cosine is shown beside them. Such a check counts only
   when the caller asked for it.
10. Generative models: `max_ppl_increase` bounds the artifact's perplexity over the original's, relative (artifact /
   original − 1, on the same held-out text, teacher-forced); `min_token_agreement` the share of positions whose
   next-token top-1 is the original's (tasks/generation.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from . import stats
from .config import Budgets
from .errors import UsageError

TOLERANCE = 1e-9
# An interleaved run's p50 ratio repeats within a few percent on a shared host: a speedup budget allows that much
# (an FP32 artifact of an ONNX file, about as fast as the file itself, is not failed by noise).
SPEEDUP_NOISE = 0.05


@dataclass
class Check:
    budget: str
    limit: float
    measured: float | None  # None when not applicable
    passed: bool | None  # None when not applicable
    applicable: bool = True
    reason: str = ""  # why it is not applicable
    original: float | None = None  # max_drop / min_relative: the two figures compared
    artifact: float | None = None
    not_checked: bool = False  # applicable, but its figure was not measured here (rule 6)
    interval: tuple[float, float] | None = None  # the 95% interval of the measured figure (rule 8)
    undecided: bool = False  # too few samples to decide (rule 8)
    gating: bool = True  # False: reported beside the figures that decide this kind of model (rule 9)

    def to_dict(self) -> dict:
        out = {"budget": self.budget, "limit": self.limit, "measured": self.measured, "passed": self.passed,
               "applicable": self.applicable}
        if self.not_checked:
            out["not_checked"] = True
        if self.interval is not None:
            out["ci95"] = [round(self.interval[0], 6), round(self.interval[1], 6)]
        if self.undecided:
            out["undecided"] = True
        if not self.gating:
            out["gating"] = False
        if not self.applicable or self.reason:
            out["reason"] = self.reason
        if self.original is not None:
            out.update(original=self.original, artifact=self.artifact)
        return out

    @property
    def operator(self) -> str:
        return "≥" if self.budget.startswith("min") else "≤"


def not_applicable(budget: str, limit: float, reason: str) -> Check:
    return Check(budget, limit, None, None, applicable=False, reason=reason)


def _drop_check(name: str, limit: float, original: float, artifact: float, interval, allow_undecided: bool) -> Check:
    """Rules 2 and 8: a drop budget, decided by the drop's 95% interval when there is one."""
    drop = original - artifact
    decision = stats.decide_drop(drop, interval, limit, TOLERANCE)
    if decision != "undecided":
        return Check(name, limit, drop, decision == "pass", original=original, artifact=artifact, interval=interval)
    return Check(name, limit, drop, allow_undecided, original=original, artifact=artifact, interval=interval,
                 undecided=True, reason=f"undecided: too few samples (the 95% interval of the drop, {interval[0]:+.4f} to "
                                        f"{interval[1]:+.4f}, reaches past the limit"
                                        + ("; the profile allows undecided budgets)" if allow_undecided else ")"))


def _metric_checks(budgets: Budgets, metrics: Mapping[str, tuple | str]) -> list[Check]:
    checks = []
    for kind, table in (("max_drop", budgets.max_drop), ("min_relative", budgets.min_relative)):
        for metric, limit in table.items():
            name = f"{kind}.{metric}"
            figure = metrics.get(metric, "not measured")
            if isinstance(figure, str):
                checks.append(not_applicable(name, limit, figure))
                continue
            original, artifact, interval = (tuple(figure) + (None,))[:3]
            if kind == "max_drop":
                checks.append(_drop_check(name, limit, original, artifact, interval, budgets.allow_undecided))
            else:
                ratio = artifact / original if original > 0 else 1.0
                checks.append(Check(name, limit, ratio, artifact >= limit * original - TOLERANCE,
                                    original=original, artifact=artifact))
    return checks


def _agreement_minimums(budgets: Budgets, metrics: Mapping[str, tuple | str]) -> list[Check]:
    """`min_decision_agreement`, `min_map_iou`, `min_box_agreement` and `min_mask_miou`: the figure itself against
    the limit (rule 3 when absent)."""
    checks = []
    for budget, metric in (("min_decision_agreement", "decision_agreement"), ("min_map_iou", "map_iou"),
                           ("min_box_agreement", "box_agreement"), ("min_mask_miou", "mask_miou"),
                           ("min_depth_agreement", "depth_agreement"), ("min_token_agreement", "token_agreement")):
        limit = getattr(budgets, budget)
        if limit is None:
            continue
        figure = metrics.get(metric, "not measured")
        if isinstance(figure, str):
            checks.append(not_applicable(budget, limit, figure))
        else:
            checks.append(Check(budget, limit, figure[1], figure[1] >= limit - TOLERANCE))
    if budgets.max_ppl_increase is not None:  # rule 10
        figure = metrics.get("ppl_increase", "not measured")
        if isinstance(figure, str):
            checks.append(not_applicable("max_ppl_increase", budgets.max_ppl_increase, figure))
        else:
            original, artifact = figure[0], figure[1]
            increase = artifact / original - 1.0 if original > 0 else 0.0
            checks.append(Check("max_ppl_increase", budgets.max_ppl_increase, increase,
                                increase <= budgets.max_ppl_increase + TOLERANCE, original=original, artifact=artifact))
    return checks


# The budget on each figure a task family gates by (tasks/base.py `gating`).
GATING_BUDGETS = {"cosine_min": "min_cosine", "top1_agreement": "min_top1_agreement",
                  "decision_agreement": "min_decision_agreement", "map_iou": "min_map_iou",
                  "box_agreement": "min_box_agreement", "mask_miou": "min_mask_miou",
                  "depth_agreement": "min_depth_agreement", "token_agreement": "min_token_agreement"}


def judge(budgets: Budgets, cosine_min: float, top1: float | None, latency_p90_ms: float | None, size_bytes: int,
          metrics: Mapping[str, tuple | str] | None = None, not_measured: str = "",
          require_measured: bool = False, secondary: Mapping[str, str] | None = None,
          speedup: float | None = None) -> list[Check]:
    """One check per budget. `metrics`: metric -> (original, artifact[, the drop's 95% interval]), or the reason
    it was not measured.

    `latency_p90_ms` None: latency was not measured (`not_measured` says why; rule 6).
    """
    checks = [Check("min_cosine", budgets.min_cosine, cosine_min, cosine_min >= budgets.min_cosine)]
    if budgets.min_top1_agreement is not None:
        if top1 is None:
            checks.append(not_applicable("min_top1_agreement", budgets.min_top1_agreement, "not a classifier"))
        else:
            checks.append(Check("min_top1_agreement", budgets.min_top1_agreement, top1, top1 >= budgets.min_top1_agreement))
    checks += _agreement_minimums(budgets, metrics or {})
    checks += _metric_checks(budgets, metrics or {})
    if budgets.max_latency_ms is not None:
        if latency_p90_ms is None:
            checks.append(Check("max_latency_ms", budgets.max_latency_ms, None, None, applicable=False,
                                reason=f"latency not measured: {not_measured or 'no device here'}", not_checked=True))
        else:
            checks.append(Check("max_latency_ms", budgets.max_latency_ms, latency_p90_ms, latency_p90_ms <= budgets.max_latency_ms))
    if budgets.min_speedup is not None:
        if speedup is None:
            checks.append(Check("min_speedup", budgets.min_speedup, None, None, applicable=False,
                                reason=f"latency not measured: {not_measured or 'no device here'}", not_checked=True))
        else:
            checks.append(Check("min_speedup", budgets.min_speedup, speedup,
                                speedup >= budgets.min_speedup * (1 - SPEEDUP_NOISE) - TOLERANCE))
    if budgets.max_size_mb is not None:
        size_mb = size_bytes / 1e6
        checks.append(Check("max_size_mb", budgets.max_size_mb, size_mb, size_mb <= budgets.max_size_mb))
    if require_measured and latency_p90_ms is None:
        checks.append(Check("require_measured", 1.0, 0.0, False, reason=f"latency not measured: {not_measured or 'no device here'}"))
    for check in checks:
        if check.budget in (secondary or {}) and check.applicable:  # rule 9
            check.gating = False
            check.reason = check.reason or secondary[check.budget]
    return checks


def verdict(checks: list[Check]) -> str:
    return "pass" if all(c.passed for c in checks if c.applicable and c.gating) else "fail"


# What a user can do about a budget that cannot be measured, by the reason rule 3 gives.
_REMEDY = {"no labels in the data": "give --data with labels",
           "not a classifier": "give --task text-classification or image-classification if it is one"}


def unmeasurable(budgets: Budgets, asked: frozenset[str], fidelity, figures: Mapping[str, tuple[float, float] | str]) -> None:
    """Rule 7: raise a usage error naming the first asked-for budget that cannot be measured.
    `fidelity`, `figures`: the task family's evaluation of the original against itself."""
    checks = judge(budgets, fidelity.cosine_min, fidelity.top1_agreement, 0.0, 0, figures)
    for check in checks:
        if not check.applicable and check.budget in asked:
            remedy = _REMEDY.get(check.reason, "or drop the budget")
            raise UsageError(f"budget {check.budget} was asked for, but it cannot be measured for this model: "
                             f"{check.reason}; {remedy}")
