"""Embedding models (feature extraction): do the artifact's embeddings find the same neighbours?

Rule: the mean-pooled (mask-aware) embeddings of the evaluation samples are ranked by cosine; the figure is
the share of each sample's 5 nearest neighbours under the original that the artifact also ranks in its 5
(stages/metrics.py `retrieval_agreement`), measured with at least 2 samples; its 95% interval is a bootstrap
over the samples' overlaps (the neighbours themselves are not re-ranked per resample).
"""

from __future__ import annotations

import numpy as np

from .. import stats
from ..stages import metrics
from .base import TaskFamily, register
from .tensor import not_a_classifier


@register
class Embedding(TaskFamily):
    name = "embedding"
    tasks = ("feature-extraction",)
    priority = 10

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        result = not_a_classifier()
        overlaps, k = metrics.retrieval_overlaps(metrics.embeddings(expected, output_names, masks),
                                                 metrics.embeddings(outputs, output_names, masks), metrics.RETRIEVAL_K)
        if not overlaps.size:
            result.not_measured["retrieval_agreement_at_5"] = "fewer than 2 evaluation samples"
            return result
        result.retrieval_agreement_at_5, result.retrieval_k = float(np.mean(overlaps)), k
        result.intervals["retrieval_agreement_at_5"] = stats.as_list(
            stats.bootstrap(lambda i: float(np.mean(overlaps[i])), overlaps.size))
        return result
