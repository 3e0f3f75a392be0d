"""Per-token and per-frame outputs (token classification, fill-mask, CTC speech recognition): does the artifact pick the
same class at every token or frame?

Rules:
1. A sequence output is one whose samples are `[batch, tokens, classes]` (classes ≥ 2): each token's argmax
   is its decision. The figure is the top-1 agreement over the real tokens of every sample (padding, where
   the attention mask says so, is left out) and over every such output, gated by `min_top1_agreement`.
2. Its 95% interval is a bootstrap over samples (the tokens of one sentence are not independent draws).
3. Cosine of the logits is reported and gates only when asked for (`--min-cosine`), as for classifiers: the
   argmax of a token is what its user reads, and INT8 logits can sit at cosine 0.97 with every token kept.
4. A model of these tasks with no such output (an export that pooled its logits) is judged as any tensor
   model (tasks/tensor.py), cosine gating.
5. CTC speech recognition (wav2vec2, HuBERT `...ForCTC`): each frame's top-1 gates as above; beside it, the
   greedy transcripts (repeats merged, the blank dropped; the blank is the id the original's frames pick most)
   are compared: the token error rate of the artifact's against the original's and the share of clips
   transcribed identically (`transcripts`). Word error rate against reference texts needs `--data` with them: not
   yet.
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


def collapse(ids: np.ndarray, blank: int) -> list[int]:
    """Rule 5: a CTC frame sequence read greedily: repeats merged, blanks dropped."""
    out, previous = [], None
    for i in ids.tolist():
        if i != previous and i != blank:
            out.append(i)
        previous = i
    return out


def edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def transcripts(expected, outputs, index: int) -> dict:
    """Rule 5: the artifact's greedy CTC transcripts against the original's: token error rate (edit distance over
    the original's length, all samples together) and the share of samples transcribed identically."""
    frames = [np.argmax(np.asarray(r[index])[0], axis=-1) for r in expected]
    blank = int(np.bincount(np.concatenate(frames)).argmax()) if frames else 0
    errors = length = same = 0
    for ref_frames, out_row in zip(frames, outputs):
        ref = collapse(ref_frames, blank)
        got = collapse(np.argmax(np.asarray(out_row[index])[0], axis=-1), blank)
        errors, length, same = errors + edit_distance(ref, got), length + len(ref), same + (ref == got)
    return {"token_error_rate": errors / length if length else 0.0, "identical": same / len(frames) if frames else 1.0,
            "blank_id": blank}


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


@register
class CtcRecognition(SequenceLabelling):
    """Rule 5: CTC speech recognition, per frame as any per-token model, with its greedy transcripts compared."""

    name = "ctc"
    tasks = ("automatic-speech-recognition",)
    why = "the top-1 class of every frame decides a CTC recogniser (its transcripts are compared beside it)"

    def measure(self, result, indices, expected, outputs, masks) -> None:
        super().measure(result, indices, expected, outputs, masks)
        result.transcripts = transcripts(expected, outputs, indices[0])
