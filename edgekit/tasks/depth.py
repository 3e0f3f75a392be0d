"""Depth estimation (DPT, GLPN, Depth Anything: a per-pixel depth map): does the artifact see the original's depths?

Rules:
1. Output: the depth map `[1, height, width]`, by name (`predicted_depth`) or as the one 3-D output.
2. The figure is the share of pixels whose depth is within a factor 1.25 of the original's (`depth_agreement`: the
   δ1 accuracy of depth estimation, against the original instead of a sensor), over the pixels where the original
   sees depth (above MIN_SHARE of that image's largest: relative-depth models put the far background near 0, where a
   ratio means nothing), every evaluation image together; it gates (`min_depth_agreement`), its 95% interval a bootstrap
   over images. The mean relative error |artifact − original| / original (AbsRel) is reported beside it.
3. Cosine of the map is reported and gates only when asked for (`--min-cosine`): a depth map's cosine stays near 1
   while near and far swap in a region. A model of this task without such an output is judged as any tensor model.
"""

from __future__ import annotations

import numpy as np

from .. import stats
from .base import register
from .tensor import DecidedBy

DELTA = 1.25
MIN_SHARE = 0.01


def depth_output(expected, output_names) -> int | None:
    """Rule 1: the index of the depth map, or None."""
    names = list(output_names)
    three = [i for i, o in enumerate(expected[0] if expected else []) if np.ndim(o) == 3]
    if "predicted_depth" in names and names.index("predicted_depth") in three:
        return names.index("predicted_depth")
    return three[0] if len(three) == 1 else None


def pixel_counts(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int, float]:
    """Rule 2 for one image: (pixels within DELTA, pixels with depth, the sum of their relative errors)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cand = np.asarray(candidate, dtype=np.float64).ravel()
    seen = ref > MIN_SHARE * max(float(ref.max(initial=0.0)), 0.0) if ref.size else ref > 0
    seen &= ref > 0
    ref, cand = ref[seen], cand[seen]
    if not ref.size:
        return 0, 0, 0.0
    ratio = np.where(cand > 0, np.maximum(cand / ref, ref / np.maximum(cand, 1e-30)), np.inf)
    return int(np.sum(ratio < DELTA)), int(ref.size), float(np.sum(np.abs(cand - ref) / ref))


@register
class Depth(DecidedBy):
    name = "depth"
    tasks = ("depth-estimation",)
    priority = 10
    figure, budget = "depth_agreement", "min_depth_agreement"
    why = "the depth map decides a depth estimator (pixels within 1.25x of the original's depth)"  # rule 3

    def locate(self, expected, output_names) -> int | None:
        return depth_output(expected, output_names)

    def measure(self, result, index, expected, outputs, masks) -> None:
        counts = np.array([pixel_counts(r[index], c[index]) for r, c in zip(expected, outputs)], dtype=np.float64)
        within, seen, error = counts[:, 0], counts[:, 1], counts[:, 2]

        def agreement(idx) -> float:
            return float(within[idx].sum() / seen[idx].sum()) if seen[idx].sum() else 1.0

        result.depth_agreement = agreement(np.arange(len(counts)))
        result.intervals["depth_agreement"] = stats.as_list(stats.bootstrap(agreement, len(counts)))
        result.depth = {"abs_rel": float(error.sum() / seen.sum()) if seen.sum() else 0.0,
                        "pixels_with_depth": int(seen.sum()), "delta": DELTA}
