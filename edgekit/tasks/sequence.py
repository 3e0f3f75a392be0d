"""Per-token outputs (token classification, fill-mask): does the artifact pick the same class at every token?

Rules:
1. A sequence output is one whose samples are `[batch, tokens, classes]` (classes ≥ 2): each token's argmax
   is its decision. The figure is the top-1 agreement over the real tokens of every sample (padding, where
   the attention mask says so, is left out) and over every such output, gated by `min_top1_agreement`.
2. Its 95% interval is a bootstrap over samples (the tokens of one sentence are not independent draws).
3. Cosine of the logits is reported and gates only when asked for (`--min-cosine`), as for classifiers: the
   argmax of a token is what its user reads, and INT8 logits can sit at cosine 0.97 with every token kept.
4. A model of these tasks with no such output (an export that pooled its logits) is judged as any tensor
   model (tasks/tensor.py), cosine gating.
"""

from __future__ import annotations

import numpy as np

from .. import stats
from .base import register
from .tensor import DecidedBy


def is_sequence(samples) -> bool:
    """Rule 1: every sample of the output is [1, tokens, classes] with classes ≥ 2."""
    return bool(samples) and all(np.ndim(s) == 3 and np.shape(s)[0] == 1 and np.shape(s)[2] >= 2 for s in samples)


def token_decisions(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rule 1: the original's and the artifact's argmax at each real token of one sample."""
    ref, cand = np.argmax(np.asarray(reference)[0], axis=-1), np.argmax(np.asarray(candidate)[0], axis=-1)
    if mask is not None and np.ndim(mask) == 2 and np.shape(mask)[1] == ref.shape[0]:
        real = np.asarray(mask)[0].astype(bool)
        ref, cand = ref[real], cand[real]
    return ref, cand


@register
class SequenceLabelling(DecidedBy):
    name = "sequence"
    tasks = ("token-classification", "fill-mask")
    priority = 10
    figure, budget = "top1_agreement", "min_top1_agreement"
    why = "the top-1 class of every token decides a per-token model"  # rule 3

    def locate(self, expected, output_names) -> list[int] | None:
        """Rule 1: the indices of the per-token outputs, or None."""
        count = len(expected[0]) if expected else 0
        return [i for i in range(count) if is_sequence([row[i] for row in expected])] or None

    def measure(self, result, indices, expected, outputs, masks) -> None:
        result.not_measured.pop("top1_agreement", None)
        same, total = np.zeros(len(expected)), np.zeros(len(expected))
        for k, (ref_row, out_row) in enumerate(zip(expected, outputs)):
            mask = masks[k] if masks is not None else None
            for i in indices:
                ref, cand = token_decisions(ref_row[i], out_row[i], mask)
                same[k] += int(np.sum(ref == cand))
                total[k] += ref.size
        if not total.sum():
            result.not_measured["top1_agreement"] = "no real tokens in the evaluation samples"
            return
        result.top1_agreement = float(same.sum() / total.sum())
        result.intervals["top1_agreement"] = stats.as_list(stats.bootstrap(
            lambda idx: float(same[idx].sum() / total[idx].sum()) if total[idx].sum() else 1.0, len(expected)))
