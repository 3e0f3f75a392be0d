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
   (`min_box_agreement`); its 95% interval is a bootstrap over images.
4. Cosine of the logits and boxes is reported and gates only when asked for (`--min-cosine`): a detector's user
   reads its boxes. A model of this task without such outputs is judged as any tensor model (tasks/tensor.py).
5. Labelled boxes: `--data` a COCO instances file (`data.read_coco`: images beside it, categories matched to the
   model's classes by name) makes each evaluation image's boxes its label. The original's and the artifact's mAP
   against them is a labelled metric, `map` (`max_drop.map`, as accuracy is for a classifier): COCO's mAP, every
   query a detection (its most probable real class, that probability its score), matched per image best score
   first to the unmatched box of its class it overlaps most, at IoU 0.50, 0.55, ..., 0.95; AP the area under the
   101-point interpolated precision-recall curve of each class with boxes, averaged over classes and thresholds.
   AP at IoU 0.5 is shown beside it; intervals are a bootstrap over images.
"""

from __future__ import annotations

import numpy as np

from .. import stats
from ..stages import metrics
from .base import register
from .tensor import DecidedBy

SCORE = 0.5
TOP_K = 5
MATCH_IOU = 0.5
AP_IOUS = np.round(np.arange(0.5, 0.951, 0.05), 2)  # rule 5: COCO's IoU thresholds
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


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


def _hits(truth: np.ndarray, found: tuple, cls: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rule 5, one image and class: (scores, hit at each threshold [detections, thresholds]) of its detections, best
    score first, each matched to the unmatched box it overlaps most; and how many boxes it has."""
    boxes = truth[truth[:, 0] == cls, 1:] if len(truth) else np.zeros((0, 4))
    mine = found[0] == cls
    scores, placed = found[1][mine], found[2][mine]
    order = np.argsort(-scores, kind="stable")
    scores, overlaps = scores[order], iou(placed[order], boxes)
    hit = np.zeros((len(scores), len(AP_IOUS)), dtype=bool)
    for t, threshold in enumerate(AP_IOUS):
        free = np.ones(len(boxes), dtype=bool)
        for d in range(len(scores)):
            row = np.where(free, overlaps[d], -1.0) if len(boxes) else np.zeros(0)
            if row.size and row.max() >= threshold:
                free[int(np.argmax(row))] = False
                hit[d, t] = True
    return scores, hit, len(boxes)


def _ap(scores: np.ndarray, hit: np.ndarray, boxes: int) -> np.ndarray:
    """Rule 5: AP at each threshold of one class's detections over the images taken (101-point interpolation)."""
    if boxes == 0:
        return np.full(len(AP_IOUS), np.nan)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hit[order], axis=0)
    precision = tp / np.arange(1, len(order) + 1)[:, None]
    recall = tp / boxes
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1] if len(order) else precision
    out = np.zeros(len(AP_IOUS))
    for t in range(len(AP_IOUS)):
        at = np.searchsorted(recall[:, t], RECALL_POINTS, side="left")
        out[t] = np.where(at < len(order), envelope[np.minimum(at, max(len(order) - 1, 0)), t], 0.0).mean() if len(order) else 0.0
    return out


class MeanAP:
    """Rule 5: mAP of one model's detections against labelled boxes, over any resample of the images."""

    def __init__(self, truth: list[np.ndarray], found: list[tuple]):
        self.classes = sorted({int(c) for t in truth for c in (t[:, 0] if len(t) else [])})
        self.per = {c: [_hits(t, f, c) for t, f in zip(truth, found)] for c in self.classes}

    def __call__(self, images) -> tuple[float, float]:
        """(mAP over IoU 0.5:0.95, AP at 0.5) over `images` (indices, repeats allowed)."""
        aps = []
        for c in self.classes:
            taken = [self.per[c][i] for i in images]
            scores = np.concatenate([s for s, _, _ in taken]) if taken else np.zeros(0)
            hit = np.concatenate([h for _, h, _ in taken]) if taken else np.zeros((0, len(AP_IOUS)), dtype=bool)
            aps.append(_ap(scores, hit, sum(n for _, _, n in taken)))
        table = np.array([a for a in aps if not np.all(np.isnan(a))])
        return (float(table.mean()), float(table[:, 0].mean())) if table.size else (float("nan"), float("nan"))


def labelled_map(truth: list, expected, outputs, found: tuple[int, int]) -> dict:
    """Rule 5: the `map` entry of an artifact (original, artifact, drop; bootstrap intervals over images) and AP50."""
    li, bi = found
    truth = [np.asarray(t, dtype=np.float64).reshape(-1, 5) for t in truth]
    every = lambda rows: [detections(r[li], r[bi], np.shape(r[li])[1]) for r in rows]  # noqa: E731: all queries
    ref, art = MeanAP(truth, every(expected)), MeanAP(truth, every(outputs))
    n, whole = len(truth), np.arange(len(truth))
    (ref_map, ref_50), (art_map, art_50) = ref(whole), art(whole)
    entry = metrics.metric_entry(ref_map, art_map, n, {
        "original": stats.bootstrap(lambda i: ref(i)[0], n, rounds=MAP_ROUNDS),
        "artifact": stats.bootstrap(lambda i: art(i)[0], n, rounds=MAP_ROUNDS),
        "drop": stats.bootstrap(lambda i: ref(i)[0] - art(i)[0], n, rounds=MAP_ROUNDS)})
    return {**entry, "ap50_original": ref_50, "ap50_artifact": art_50, "boxes": int(sum(len(t) for t in truth))}


MAP_ROUNDS = 300  # bootstrap resamples of mAP (each reruns the AP of every class)


@register
class Detection(DecidedBy):
    name = "detection"
    tasks = ("object-detection",)
    priority = 10
    figure, budget = "box_agreement", "min_box_agreement"
    why = "the boxes decide a detector (box agreement)"  # rule 4

    classes: dict[str, int] = {}

    def locate(self, expected, output_names) -> tuple[int, int] | None:
        return head(expected, output_names)

    def for_source(self, source) -> "Detection":
        from ..data import LabelSpace

        family = Detection()
        family.classes = LabelSpace.from_config(source.config or {}).names
        return family

    def samples(self, request):
        from ..data import coco_samples, samples_for

        if request.data is not None and request.data.suffix.lower() == ".json":
            return coco_samples(request, self.classes)
        return samples_for(request)

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        result = super().task_metrics(expected, outputs, output_names, labels, masks)
        found = self.locate(expected, output_names)
        if found is None:
            return result
        if labels is None or not all(isinstance(t, list) for t in labels):
            result.not_measured["map"] = "no labelled boxes in the data (give --data a COCO instances file)"
        else:
            result.task_metrics["map"] = labelled_map(labels, expected, outputs, found)
            result.labelled_samples = len(labels)
        return result

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
