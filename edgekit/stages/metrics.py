"""Task metrics: how well the original and an artifact do the model's job, not just how close they are.

Pure functions on numpy arrays; `evaluate` combines them for one artifact.

Rules:
1. Classifiers with labels: accuracy and macro-F1 for the original and for the artifact, and the drop
   (original − artifact) and the ratio artifact / original (1 when the original scores 0). Macro-F1
   averages the per-class F1 = 2·TP / (2·TP + FP + FN) over every class that occurs
   in the labels or in the predictions (scikit-learn's `average="macro"`).
2. Classifiers, labels or not: top-1 agreement (the artifact's top class is the original's) and, with
   at least 5 classes, top-5 agreement (the original's top class is among the artifact's 5 highest).
3. Embedding models (task feature-extraction): retrieval agreement at k = 5. For each evaluation
   sample, its k nearest neighbours by cosine (itself excluded) under the original's embeddings and
   under the artifact's; the overlap |A ∩ B| / k, averaged over samples. k is capped at n − 1; fewer
   than 2 samples measure nothing. Ties are broken by sample index, so the figure is deterministic.
4. The embedding is the output named `sentence_embedding` when there is one; otherwise the first
   output, mean-pooled over the sequence axis (axis 1) with the feed's attention mask when it has one.
5. A figure that cannot be measured is None, never NaN; each figure lies in [0, 1].
6. Every task figure comes with the number of samples behind it and its 95% interval (stats.py): Wilson's
   for accuracy and agreements, a paired interval for the accuracy drop, a (paired) bootstrap for macro-F1
   and retrieval agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import stats

TOP5 = 5
RETRIEVAL_K = 5
SENTENCE_EMBEDDING = "sentence_embedding"

# Metrics a budget (max_drop / min_relative) may name. The first two compare with labels; the agreement
# metrics compare with the original, whose agreement with itself is 1 by definition.
LABELLED_METRICS = ("accuracy", "macro_f1")
# Compared with references in the data other than class labels, as labelled metrics are: 1 − WER against reference
# transcripts (speech recognisers, tasks/sequence.py rule 6), mAP against labelled boxes (detectors, tasks/detection.py rule 5).
REFERENCE_METRICS = ("word_accuracy", "map")
AGREEMENT_METRICS = ("top1_agreement", "top5_agreement", "retrieval_agreement_at_5", "decision_agreement", "map_iou",
                     "box_agreement", "mask_miou", "token_agreement", "depth_agreement")
# Why an agreement metric is absent when no family said otherwise.
NOT_MEASURED = {"decision_agreement": "no probability outputs", "map_iou": "no probability-map outputs",
                "box_agreement": "not a detector", "mask_miou": "not a segmenter",
                "token_agreement": "not a generative model", "ppl_increase": "not a generative model",
                "depth_agreement": "not a depth estimator", "word_accuracy": "not a speech recogniser", "map": "not a detector"}
BUDGET_METRICS = LABELLED_METRICS + REFERENCE_METRICS + AGREEMENT_METRICS


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Fraction of samples whose predicted class is the label."""
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if labels.size == 0:
        raise ValueError("accuracy of no samples")
    return float(np.mean(labels == predictions))


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes seen in labels or predictions."""
    labels, predictions = np.asarray(labels).ravel(), np.asarray(predictions).ravel()
    if labels.size == 0:
        raise ValueError("macro-F1 of no samples")
    scores = []
    for c in np.union1d(labels, predictions):
        tp = float(np.sum((predictions == c) & (labels == c)))
        fp = float(np.sum((predictions == c) & (labels != c)))
        fn = float(np.sum((predictions != c) & (labels == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    return float(np.mean(scores))


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of samples (rows of logits) where both give the same top class."""
    reference, candidate = _logits(reference), _logits(candidate)
    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)))


def topk_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = TOP5) -> float | None:
    """Fraction of samples whose reference top class is among the candidate's k highest; None if < k classes."""
    reference, candidate = _logits(reference), _logits(candidate)
    if reference.shape[1] < k:
        return None
    top = np.argmax(reference, axis=1)
    # stable order: equal scores rank by class index
    order = np.argsort(-candidate, axis=1, kind="stable")[:, :k]
    return float(np.mean([t in row for t, row in zip(top, order)]))


def nearest_neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's k nearest other rows by cosine; ties broken by index."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def retrieval_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = RETRIEVAL_K) -> tuple[float | None, int]:
    """Mean overlap |A ∩ B| / k of each sample's k nearest neighbours under both embeddings, and the k used."""
    overlaps, k = retrieval_overlaps(reference, candidate, k)
    return (float(np.mean(overlaps)) if overlaps.size else None), k


def retrieval_overlaps(reference: np.ndarray, candidate: np.ndarray, k: int = RETRIEVAL_K) -> tuple[np.ndarray, int]:
    """Each sample's overlap |A ∩ B| / k of its k nearest neighbours under both embeddings (empty with < 2 samples)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    n = reference.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(0), 0
    a, b = nearest_neighbours(reference.reshape(n, -1), k), nearest_neighbours(candidate.reshape(n, -1), k)
    return np.array([len(set(ra.tolist()) & set(rb.tolist())) / k for ra, rb in zip(a, b)]), k


def embeddings(outputs: Sequence[Sequence[np.ndarray]], output_names: Sequence[str],
               masks: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """(n, d): one embedding per sample, from each sample's outputs (see rule 4)."""
    names = list(output_names)
    index = names.index(SENTENCE_EMBEDDING) if SENTENCE_EMBEDDING in names else 0
    rows = []
    for i, outs in enumerate(outputs):
        out = np.asarray(outs[index], dtype=np.float64)
        if index == 0 and SENTENCE_EMBEDDING not in names and out.ndim >= 3:
            mask = masks[i] if masks is not None and i < len(masks) else None
            out = mean_pool(out, mask)
        rows.append(out.reshape(-1))
    return np.stack(rows)


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean over axis 1 (the sequence) of a (batch, seq, ...) array, counting only positions where mask is 1."""
    hidden = np.asarray(hidden, dtype=np.float64)
    if mask is None or np.asarray(mask).shape[:2] != hidden.shape[:2]:
        return hidden.mean(axis=1)
    weights = np.asarray(mask, dtype=np.float64).reshape(hidden.shape[:2] + (1,) * (hidden.ndim - 2))
    total = weights.sum(axis=1)
    return (hidden * weights).sum(axis=1) / np.maximum(total, 1e-9)


def class_logits(outputs: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """(n, classes): each sample's first output, flattened."""
    return np.stack([np.asarray(outs[0], dtype=np.float64).reshape(-1) for outs in outputs])


def _logits(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    return np.where(np.isnan(x), -np.inf, x)


@dataclass
class TaskMetrics:
    """The task figures of one artifact against the original (None: not measurable)."""

    task_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> original/artifact/drop/relative
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    retrieval_agreement_at_5: float | None = None
    retrieval_k: int | None = None
    decision_agreement: float | None = None  # probability outputs: the same side of 0.5 (stages/outputs.py)
    map_iou: float | None = None  # probability-map outputs: IoU of the binarised maps
    box_agreement: float | None = None  # detectors: F1 of the artifact's boxes matched to the original's (tasks/detection.py)
    boxes: dict[str, float] | None = None  # detectors: recall, precision, matched IoU, counts
    mask_miou: float | None = None  # segmenters: mean IoU of the artifact's mask against the original's
    masks: dict[str, float] | None = None  # segmenters: pixel agreement, classes
    transcripts: dict[str, float] | None = None  # CTC speech recognition: token error rate of the greedy transcripts
    depth_agreement: float | None = None  # depth estimators: pixels within 1.25x of the original's depth (tasks/depth.py)
    depth: dict[str, float] | None = None  # depth estimators: mean relative error, pixels with depth
    token_agreement: float | None = None  # generative models: next-token top-1 agreement, teacher-forced (tasks/generation.py)
    generation: dict[str, float] | None = None  # generative models: perplexity of both, KL, greedy continuation agreement
    labelled_samples: int | None = None
    not_measured: dict[str, str] = field(default_factory=dict)  # metric -> why not
    intervals: dict[str, list[float]] = field(default_factory=dict)  # agreement metric -> its 95% interval (stats.py)

    def budget_figures(self) -> dict[str, tuple | str]:
        """metric -> (original, artifact, the 95% interval of the drop or None) for every budget metric, or the
        reason it was not measured. An agreement's original is 1, so its drop is 1 − agreement."""
        figures: dict[str, tuple | str] = {}
        for name in LABELLED_METRICS + REFERENCE_METRICS:
            entry = self.task_metrics.get(name)
            figures[name] = ((entry["original"], entry["artifact"], tuple(entry["drop_ci95"]) if "drop_ci95" in entry else None)
                             if entry else self.not_measured.get(name, NOT_MEASURED.get(name, "not measured")))
        for name in AGREEMENT_METRICS:
            value, interval = getattr(self, name), self.intervals.get(name)
            figures[name] = ((1.0, value, (1 - interval[1], 1 - interval[0]) if interval else None)
                             if value is not None else self.not_measured.get(name, NOT_MEASURED.get(name, "not measured")))
        gen = self.generation
        figures["ppl_increase"] = ((gen["ppl_original"], gen["ppl_artifact"]) if gen else NOT_MEASURED["ppl_increase"])
        return figures


def metric_entry(original: float, artifact: float, n: int | None = None,
                 intervals: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """One task metric of an artifact: both figures, the drop and the ratio; with `n` samples and the 95%
    intervals of `original`, `artifact` and `drop` (stats.py) when they were computed."""
    entry: dict[str, Any] = {"original": original, "artifact": artifact, "drop": original - artifact,
                             "relative": artifact / original if original > 0 else 1.0}
    if n is not None:
        entry["n"] = n
    for key, interval in (intervals or {}).items():
        entry[f"{key}_ci95"] = stats.as_list(interval)
    return entry


def labelled_metrics(labels: np.ndarray, reference: np.ndarray, candidate: np.ndarray) -> dict[str, dict[str, Any]]:
    """Accuracy (Wilson intervals, paired drop) and macro-F1 (paired bootstrap) of the original's and the
    artifact's predicted classes against `labels`, on the same samples."""
    y, ref, cand = np.asarray(labels).ravel(), np.asarray(reference).ravel(), np.asarray(candidate).ravel()
    n = int(y.size)
    right_ref, right_cand = ref == y, cand == y
    out = {"accuracy": metric_entry(accuracy(y, ref), accuracy(y, cand), n, {
        "original": stats.wilson(int(right_ref.sum()), n), "artifact": stats.wilson(int(right_cand.sum()), n),
        "drop": stats.paired_drop(right_ref, right_cand)})}
    out["macro_f1"] = metric_entry(macro_f1(y, ref), macro_f1(y, cand), n, {
        "original": stats.bootstrap(lambda i: macro_f1(y[i], ref[i]), n),
        "artifact": stats.bootstrap(lambda i: macro_f1(y[i], cand[i]), n),
        "drop": stats.bootstrap(lambda i: macro_f1(y[i], ref[i]) - macro_f1(y[i], cand[i]), n)})
    return out


def evaluate(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]],
             output_names: Sequence[str], kind: str, labels: Sequence[int] | None = None,
             masks: Sequence[np.ndarray | None] | None = None) -> TaskMetrics:
    """Task figures for one artifact, as the task family `kind` computes them ("classifier", "embedding"; any
    other name: the `tensor` family, no task figure). The families live in edgekit/tasks/."""
    from .. import tasks

    family = tasks.REGISTRY.find(kind) or tasks.get("tensor")
    return family.task_metrics(reference, candidate, output_names, labels, masks)
