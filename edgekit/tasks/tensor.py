"""Any other model (an ONNX file, token classification, fill-mask, question answering, ...): judged on its
outputs alone (cosine, error, SNR per output: stages/verify.py), with no task figure.

This family handles every task at the lowest priority, so every model has a family (base rule 2).
"""

from __future__ import annotations

from ..stages import metrics
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
        return result
