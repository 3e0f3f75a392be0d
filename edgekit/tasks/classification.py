"""Classifiers (text and image): class agreement with the original, and accuracy and macro F1 on labels.

Rules:
1. `--data` labels are resolved against the model's classes (config.json's id2label / label2id); a label
   id outside the classes the model outputs is a usage error naming it.
2. Figures: top-1 and top-5 agreement of the class logits with the original's (top-5 only with at least
   five classes); with labels, accuracy and macro F1 of the original and the artifact (stages/metrics.py).
3. An ONNX file given no task is a classifier when its one output is [batch, C] (C ≥ 2) and the labels in
   `--data` are class ids in [0, C) (or two to C ImageFolder subfolders): `inferred(C)` is that family,
   its label space C classes; the report's notes say it was inferred.
4. What gates a classifier is what its users care about: top-1 agreement and the accuracy drop. The logit
   cosine is reported beside them and gates only when asked for (`--min-cosine`): logits of a good INT8
   classifier can sit at cosine 0.97 while every top-1 class is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import stats
from ..errors import UsageError
from ..stages import metrics
from .base import TaskFamily, register


@register
class Classification(TaskFamily):
    name = "classifier"
    tasks = ("text-classification", "image-classification", "audio-classification")
    priority = 10
    classifier = True
    secondary = {"min_cosine": "reported, not gated: top-1 agreement and the accuracy drop decide a classifier"}  # rule 4
    classes: int | None = None  # an inferred classifier's class count (rule 3)

    @classmethod
    def inferred(cls, classes: int) -> "Classification":
        family = cls()
        family.classes = classes
        return family

    def gating(self, fidelity):
        """Rule 4: top-1 agreement decides a classifier."""
        if fidelity.top1_agreement is None:
            return super().gating(fidelity)
        return "top1_agreement", fidelity.top1_agreement

    def label_space(self, source):
        from dataclasses import replace

        from ..data import LabelSpace

        space = LabelSpace.from_config(source.config)
        return replace(space, num_labels=self.classes) if space.num_labels is None and self.classes else space

    def check(self, samples, reference_outputs: list, data: Path | None) -> None:
        if not samples.labelled or not reference_outputs:
            return
        classes = int(reference_outputs[0][0].size)
        bad = [y for y in samples.evaluation_labels if not 0 <= y < classes]
        if bad:
            raise UsageError(f"{data}: label id {bad[0]} is not a class of the model, which outputs {classes} classes "
                             f"(ids 0..{classes - 1})")

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        result = metrics.TaskMetrics()
        ref, cand = metrics.class_logits(expected), metrics.class_logits(outputs)
        n = ref.shape[0]
        result.top1_agreement = metrics.top1_agreement(ref, cand)
        result.top5_agreement = metrics.topk_agreement(ref, cand, metrics.TOP5)
        for name in ("top1_agreement", "top5_agreement"):
            value = getattr(result, name)
            if value is not None:
                result.intervals[name] = stats.as_list(stats.wilson(round(value * n), n))
        if result.top5_agreement is None:
            result.not_measured["top5_agreement"] = f"fewer than {metrics.TOP5} classes ({ref.shape[1]})"
        if labels is not None:
            y = np.asarray(labels)
            result.task_metrics.update(metrics.labelled_metrics(y, np.argmax(ref, axis=1), np.argmax(cand, axis=1)))
            result.labelled_samples = int(y.size)
        else:
            for name in metrics.LABELLED_METRICS:
                result.not_measured[name] = "no labels in the data"
        result.not_measured["retrieval_agreement_at_5"] = "not an embedding model"
        return result
