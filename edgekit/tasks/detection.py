"""Object detectors with set-prediction heads (DETR, YOLOS, RT-DETR, Conditional DETR): are the artifact's boxes the
original's?

Rules:
1. Outputs: the class logits `[1, queries, classes + 1]` (the last class is "no object") and the boxes
   `[1, queries, 4]` (centre x, centre y, width, height, normalised), found by name (`logits`, `pred_boxes`),
   else by shape (the 3-D output whose last dimension is 4 and whose values lie in [0, 1] holds the boxes, the
   other 3-D one with as many queries the logits).
2. Detections of one image: each query's class is the most probable real class (softmax over all classes), its
   score that probability. The detections are the queries scoring at least SCORE. When the original detects
   nothing at SCORE on any evaluation image (random weights, synthetic inputs), each image's TOP_K best queries
   are its detections instead, for the original and the artifact alike (`boxes.selection` says which).
3. The artifact's detections are matched to the original's greedily, best IoU first, same class and IoU at least
   MATCH_IOU: box recall (the original's detections the artifact finds), box precision (the artifact's that are
   the original's), `box_agreement` (their F1) and the mean IoU of the matched pairs. `box_agreement` gates
   (`min_box_agreement`); its 95% interval is a bootstrap over images. With labelled boxes (COCO JSON) the mAP of
   both would come next: not yet.
4. Cosine of the logits and boxes is reported and gates only when asked for (`--min-cosine`): a detector's user
   reads its boxes. A model of this task without such outputs is judged as any tensor model (tasks/tensor.py).
"""

from __future__ import annotations

import numpy as np

from .. import stats
from .base import register
from .tensor import DecidedBy

SCORE = 0.5
TOP_K = 5
MATCH_IOU = 0.5


def head(expected, output_names) -> tuple[int, int] | None:
    """Rule 1: (index of the logits, index of the boxes), or None."""
    names = list(output_names)
    if "logits" in names and "pred_boxes" in names:
        return names.index("logits"), names.index("pred_boxes")
    if not expected:
        return None
    shapes = [np.shape(o) for o in expected[0]]
    boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] == 4]
    if len(boxes) > 1:  # logits of three classes and "no object" are [.., 4] too: boxes are sigmoids, within [0, 1]
        boxes = [i for i in boxes if all(0.0 <= np.min(row[i]) and np.max(row[i]) <= 1.0 for row in expected)]
    logits = [i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] >= 2 and i not in boxes]
    if len(boxes) == 1 and len(logits) == 1 and shapes[boxes[0]][1] == shapes[logits[0]][1]:
        return logits[0], boxes[0]
    return None


def detections(logits: np.ndarray, boxes: np.ndarray, top_k: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule 2: (classes, scores, boxes as x0, y0, x1, y1) of one image's detections."""
    z = np.asarray(logits, dtype=np.float64)[0]
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    probs = (z / z.sum(axis=-1, keepdims=True))[:, :-1]
    classes, scores = probs.argmax(axis=-1), probs.max(axis=-1)
    keep = np.argsort(-scores, kind="stable")[:top_k] if top_k else np.where(scores >= SCORE)[0]
    cx, cy, w, h = np.asarray(boxes, dtype=np.float64)[0][keep].T
    return classes[keep], scores[keep], np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (x0, y0, x1, y1): [len(a), len(b)]."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1, y1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(reference, candidate) -> list[float]:
    """Rule 3: the IoUs of the greedy same-class matches of two images' detections."""
    overlaps = iou(reference[2], candidate[2]) * (reference[0][:, None] == candidate[0][None, :])
    found = []
    while overlaps.size and overlaps.max() >= MATCH_IOU:
        i, j = np.unravel_index(int(np.argmax(overlaps)), overlaps.shape)
        found.append(float(overlaps[i, j]))
        overlaps[i, :], overlaps[:, j] = 0.0, 0.0
    return found


@register
class Detection(DecidedBy):
    name = "detection"
    tasks = ("object-detection",)
    priority = 10
    figure, budget = "box_agreement", "min_box_agreement"
    why = "the boxes decide a detector (box agreement)"  # rule 4

    def locate(self, expected, output_names) -> tuple[int, int] | None:
        return head(expected, output_names)

    def measure(self, result, found, expected, outputs, masks) -> None:
        li, bi = found
        confident = any(len(detections(row[li], row[bi], None)[0]) for row in expected)
        top_k = None if confident else TOP_K
        pairs = [(detections(r[li], r[bi], top_k), detections(c[li], c[bi], top_k)) for r, c in zip(expected, outputs)]
        matched = [match(r, c) for r, c in pairs]
        n_ref = np.array([len(r[0]) for r, _ in pairs], dtype=np.float64)
        n_art = np.array([len(c[0]) for _, c in pairs], dtype=np.float64)
        hits = np.array([len(m) for m in matched], dtype=np.float64)

        def f1(idx) -> float:
            ref, art, hit = n_ref[idx].sum(), n_art[idx].sum(), hits[idx].sum()
            return 1.0 if ref + art == 0 else float(2 * hit / (ref + art))

        everything = np.arange(len(pairs))
        result.box_agreement = f1(everything)
        result.intervals["box_agreement"] = stats.as_list(stats.bootstrap(f1, len(pairs)))
        ious = [v for m in matched for v in m]
        result.boxes = {"selection": f"score >= {SCORE:g}" if confident else f"top {TOP_K} queries per image",
                        "recall": float(hits.sum() / n_ref.sum()) if n_ref.sum() else 1.0,
                        "precision": float(hits.sum() / n_art.sum()) if n_art.sum() else 1.0,
                        "matched_iou_mean": float(np.mean(ious)) if ious else None,
                        "original_boxes": int(n_ref.sum()), "artifact_boxes": int(n_art.sum())}
