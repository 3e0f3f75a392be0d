"""Semantic segmentation (SegFormer, UperNet, DPT-style heads: per-pixel class logits): does the artifact paint the
original's masks?

Rules:
1. Output: class logits `[1, classes, height, width]` (classes ≥ 2), by name (`logits`) or as the one 4-D output;
   each pixel's class is its argmax.
2. The figure is the mean IoU of the artifact's mask against the original's (`mask_miou`): for each class present in
   either mask, the intersection over the union of its pixels, summed over every evaluation image, then averaged
   over the classes. Pixel agreement (the share of pixels given the same class) is reported beside it. It gates
   (`min_mask_miou`); its 95% interval is a bootstrap over images.
3. Cosine of the logits is reported and gates only when asked for (`--min-cosine`): a segmenter's user reads its
   mask. A model of this task without such an output is judged as any tensor model (tasks/tensor.py).
"""

from __future__ import annotations

import numpy as np

from .. import stats
from .base import register
from .tensor import DecidedBy


def mask_output(expected, output_names) -> int | None:
    """Rule 1: the index of the per-pixel logits, or None."""
    names = list(output_names)
    four = [i for i, o in enumerate(expected[0] if expected else []) if np.ndim(o) == 4 and np.shape(o)[1] >= 2]
    if "logits" in names and names.index("logits") in four:
        return names.index("logits")
    return four[0] if len(four) == 1 else None


def class_counts(reference: np.ndarray, candidate: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Rule 2 for one image: per class (intersection, union) of the two argmax masks; (same pixels, pixels)."""
    ref = np.asarray(reference)[0].argmax(axis=0).ravel()
    cand = np.asarray(candidate)[0].argmax(axis=0).ravel()
    inter = np.bincount(ref[ref == cand], minlength=classes)[:classes]
    union = np.bincount(ref, minlength=classes)[:classes] + np.bincount(cand, minlength=classes)[:classes] - inter
    return inter.astype(np.float64), union.astype(np.float64), int(np.sum(ref == cand)), int(ref.size)


@register
class Segmentation(DecidedBy):
    name = "segmentation"
    tasks = ("semantic-segmentation",)
    priority = 10
    figure, budget = "mask_miou", "min_mask_miou"
    why = "the mask decides a segmenter (mean IoU)"  # rule 3

    def locate(self, expected, output_names) -> int | None:
        return mask_output(expected, output_names)

    def measure(self, result, index, expected, outputs, masks) -> None:
        classes = int(np.shape(expected[0][index])[1])
        counts = [class_counts(r[index], c[index], classes) for r, c in zip(expected, outputs)]
        inter = np.stack([c[0] for c in counts])
        union = np.stack([c[1] for c in counts])

        def miou(idx) -> float:
            u = union[idx].sum(axis=0)
            present = u > 0
            return float(np.mean(inter[idx].sum(axis=0)[present] / u[present])) if present.any() else 1.0

        result.mask_miou = miou(np.arange(len(counts)))
        result.intervals["mask_miou"] = stats.as_list(stats.bootstrap(miou, len(counts)))
        same, pixels = sum(c[2] for c in counts), sum(c[3] for c in counts)
        result.masks = {"pixel_agreement": same / pixels if pixels else 1.0, "classes": classes,
                        "classes_present": int(np.sum(union.sum(axis=0) > 0))}
