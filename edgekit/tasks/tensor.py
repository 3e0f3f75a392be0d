"""Any other model (an ONNX file, token classification, fill-mask, question answering, ...): judged on its
outputs alone, each by the metric its kind needs (stages/outputs.py).

Rules:
1. Dense and scalar outputs: cosine, error and SNR (stages/verify.py). Probability outputs: decision
   agreement at 0.5 (`min_decision_agreement`); probability maps: the IoU of the binarised maps
   (`min_map_iou`) and the range each reaches.
2. Cosine gates only when some output is dense or scalar; a model whose every output is a probability or a
   probability map is decided by rule 1's figures, its cosine reported beside them (when the profile sets
   their budgets; otherwise cosine is all there is, and it gates).

This family handles every task at the lowest priority, so every model has a family (base rule 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import stats
from ..stages import metrics
from ..stages import outputs as kinds
from .base import TaskFamily, register


def not_a_classifier() -> metrics.TaskMetrics:
    """Task figures of a model that is not a classifier: the labelled and agreement metrics do not apply."""
    result = metrics.TaskMetrics()
    for name in metrics.LABELLED_METRICS + ("top1_agreement", "top5_agreement"):
        result.not_measured[name] = "not a classifier"
    return result


@register
class Tensor(TaskFamily):
    name = "tensor"
    priority = -1

    def handles(self, task: str | None) -> bool:
        return True

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        result = not_a_classifier()
        result.not_measured["retrieval_agreement_at_5"] = "not an embedding model"
        probability_outputs(result, expected, outputs)
        return result

    def gating(self, fidelity):
        """Rule 2: a model judged by its probabilities is searched by them (the map IoU first)."""
        for name in ("map_iou", "decision_agreement"):
            value = getattr(fidelity, name)
            if value is not None and fidelity.per_output and all(
                    o.get("kind") in ("probability", "probability_map") for o in fidelity.per_output.values()):
                return name, value
        return super().gating(fidelity)

    def secondary_for(self, reference_outputs: list, budgets=None) -> dict[str, str]:
        """Rule 2: cosine does not gate a model whose every output is a probability or a probability map, when the
        profile has the budget each of those kinds is decided by (else cosine is all there is, and it gates)."""
        count = len(reference_outputs[0]) if reference_outputs else 0
        found = {kinds.kind(kinds.columns(reference_outputs, i)) for i in range(count)}
        deciding = {kinds.PROBABILITY: getattr(budgets, "min_decision_agreement", None),
                    kinds.PROBABILITY_MAP: getattr(budgets, "min_map_iou", None)}
        if found and found <= set(deciding) and all(deciding[k] is not None for k in found):
            return {"min_cosine": "reported, not gated: the decision agreement and the map IoU decide a model whose "
                                  "outputs are probabilities"}
        return dict(self.secondary)


class DecidedBy(TaskFamily):
    """A family decided by a figure of its own (`figure`, under the budget `budget`) when the model has the outputs
    that figure reads (`locate` finds them); its cosine is then reported, not gated (`why`), and `measure` fills the
    figure in. A model of its tasks without such outputs is judged as any tensor model."""

    figure: str = ""
    budget: str = ""
    why: str = ""

    def locate(self, expected, output_names) -> Any:
        """Where the outputs the figure reads are (indices), or None."""
        raise NotImplementedError

    def measure(self, result: metrics.TaskMetrics, found: Any, expected, outputs, masks) -> None:
        """Fill in the figure (and its interval) of one artifact."""
        raise NotImplementedError

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        found = self.locate(expected, output_names)
        if found is None:
            return Tensor().task_metrics(expected, outputs, output_names, labels, masks)
        result = not_a_classifier()
        result.not_measured["retrieval_agreement_at_5"] = "not an embedding model"
        self.measure(result, found, expected, outputs, masks)
        return result

    def secondary_for(self, reference_outputs: list, budgets=None) -> dict[str, str]:
        if self.locate(reference_outputs, []) is not None and getattr(budgets, self.budget, None) is not None:
            return {"min_cosine": f"reported, not gated: {self.why}"}
        return Tensor().secondary_for(reference_outputs, budgets)

    def gating(self, fidelity):
        value = getattr(fidelity, self.figure, None)
        return (self.figure, value) if value is not None else super().gating(fidelity)


def probability_outputs(result: metrics.TaskMetrics, expected, outputs) -> None:
    """Rule 1: decision agreement over every probability output (Wilson interval), IoU over every probability map
    (bootstrap over samples)."""
    count = len(expected[0]) if expected else 0
    columns = [(kinds.columns(expected, i), kinds.columns(outputs, i)) for i in range(count)]
    probabilities = [c for c in columns if kinds.kind(c[0]) == kinds.PROBABILITY]
    maps = [c for c in columns if kinds.kind(c[0]) == kinds.PROBABILITY_MAP]
    if probabilities:
        same, total = (sum(v) for v in zip(*(kinds.decisions(r, c) for r, c in probabilities)))
        result.decision_agreement = same / total
        result.intervals["decision_agreement"] = stats.as_list(stats.wilson(same, total))
    if maps:
        per_sample = [kinds.ious(r[i:i + 1], c[i:i + 1]) for i in range(len(expected)) for r, c in maps]
        inter = np.array([x.sum() for x, _ in per_sample])
        union = np.array([u.sum() for _, u in per_sample])
        result.map_iou = float(inter.sum() / union.sum()) if union.sum() else 1.0
        if union.sum():
            result.intervals["map_iou"] = stats.as_list(stats.bootstrap(
                lambda idx: float(inter[idx].sum() / union[idx].sum()) if union[idx].sum() else 1.0, len(inter)))
