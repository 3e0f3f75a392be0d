"""The metric each output needs: what kind of output it is, decided once from the original's outputs.

Flattened per-sample cosine says nothing about a single probability (its cosine is ±1 whatever the value)
or a probability map that is zero on most inputs (its cosine is 0 on an empty map, however good the
artifact). Rules:
1. An output whose values the original keeps within [0, 1] on every evaluation sample is a probability:
   with at most SHORT values per sample a `probability` (a voice detector's speech probability, a
   sigmoid score); with a spatial layout (two trailing dimensions above 1) and mostly below THRESHOLD a
   `probability_map` (a text detector's map, a mask). Other outputs of at most SHORT values are `scalar`;
   the rest `dense`.
2. Figures: a `probability` gets its decision agreement at THRESHOLD (the share of values on the same
   side of it in the original and the artifact); a `probability_map` the IoU of its binarised map (the
   positive pixels of original and artifact, over every sample with any) and its range (the largest value
   each reaches: a map the artifact caps below the threshold is broken, whatever its cosine). Every output
   keeps its cosine, error and SNR as secondary figures.
3. Cosine gates only `dense` and `scalar` outputs; a scalar's cosine is taken over the series of its values
   across samples, not per sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SHORT = 4
THRESHOLD = 0.5
_TOLERANCE = 1e-6

DENSE, SCALAR, PROBABILITY, PROBABILITY_MAP = "dense", "scalar", "probability", "probability_map"


def kind(samples: Sequence[np.ndarray]) -> str:
    """Rule 1: the kind of one output, from the original's values on the evaluation samples."""
    arrays = [np.asarray(s) for s in samples]  # read in place: this runs on every evaluation of every output
    if not arrays:
        return DENSE
    # all(...) stops at the first sample outside [0, 1]: a dense output costs one sample's pass, not a copy of all
    probability = all(a.size and np.all(np.isfinite(a)) and a.min() >= -_TOLERANCE and a.max() <= 1 + _TOLERANCE
                      for a in arrays)
    if max(a.size for a in arrays) <= SHORT:
        return PROBABILITY if probability else SCALAR
    spatial = all(a.ndim >= 2 and a.shape[-1] > 1 and a.shape[-2] > 1 for a in arrays)
    if probability and spatial:
        positive = sum(int(np.count_nonzero(a >= THRESHOLD)) for a in arrays) / sum(a.size for a in arrays)
        if positive < 0.5:
            return PROBABILITY_MAP
    return DENSE


def decisions(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> tuple[int, int]:
    """Rule 2: (values on the same side of THRESHOLD, values) over all samples."""
    same = total = 0
    for r, c in zip(reference, candidate):
        r, c = np.asarray(r).ravel() >= THRESHOLD, np.asarray(c).ravel() >= THRESHOLD
        same += int(np.sum(r == c))
        total += int(r.size)
    return same, total


def ious(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rule 2: per sample with any positive pixel in either map, (intersection, union) of the binarised maps."""
    inter, union = [], []
    for r, c in zip(reference, candidate):
        r, c = np.asarray(r) >= THRESHOLD, np.asarray(c) >= THRESHOLD
        u = int(np.sum(r | c))
        if u:
            inter.append(int(np.sum(r & c)))
            union.append(u)
    return np.array(inter, dtype=np.float64), np.array(union, dtype=np.float64)


def series_cosine(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """Rule 3: the cosine of a short output's values across samples (1 when both are all zero)."""
    from .verify import cosine

    return cosine(np.concatenate([np.asarray(r).ravel() for r in reference]),
                  np.concatenate([np.asarray(c).ravel() for c in candidate]))


def value_range(samples: Sequence[np.ndarray]) -> float:
    """The largest value an output reaches over the samples."""
    return float(max(np.max(np.asarray(s)) for s in samples))


def figures(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict:
    """One output's kind and its kind's figures (rules 1-3), for report.json's `per_output`."""
    found = kind(reference)
    out: dict = {"kind": found}
    if found == SCALAR:
        out["series_cosine"] = series_cosine(reference, candidate)
    elif found == PROBABILITY:
        same, total = decisions(reference, candidate)
        out["decision_agreement"] = same / total if total else 1.0
    elif found == PROBABILITY_MAP:
        inter, union = ious(reference, candidate)
        out["iou"] = float(inter.sum() / union.sum()) if union.size else 1.0
        out["range_original"], out["range_artifact"] = value_range(reference), value_range(candidate)
    return out


def columns(rows: Sequence[Sequence[np.ndarray]], index: int) -> list[np.ndarray]:
    """Output `index` of every sample."""
    return [np.asarray(row[index]) for row in rows]
