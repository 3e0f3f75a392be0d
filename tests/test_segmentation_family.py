"""Semantic segmenters are decided by the mean IoU of their masks (tasks/segmentation.py; issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit import tasks
from edgekit.config import Budgets
from edgekit.source import infer_task

from models import images, tiny_segformer


def _logits(mask: np.ndarray, classes: int = 3) -> np.ndarray:
    """Per-pixel logits whose argmax is `mask`."""
    out = np.zeros((1, classes) + mask.shape, dtype=np.float32)
    for c in range(classes):
        out[0, c][mask == c] = 5.0
    return out


def test_mean_iou_over_classes_and_pixel_agreement():
    family = tasks.for_task("semantic-segmentation")
    ref = np.zeros((4, 4), dtype=int)
    ref[:, 2:] = 1  # two classes, 8 pixels each
    cand = ref.copy()
    cand[0, 2] = 0  # one pixel of class 1 painted as class 0
    fidelity, figures = family.evaluate([[_logits(ref)]], [[_logits(cand)]], ["logits"], None, None)
    expected = np.mean([8 / 9, 7 / 8])  # class 0: 8 of 9; class 1: 7 of 8; class 2 absent from both
    assert fidelity.mask_miou == pytest.approx(expected)
    assert fidelity.masks["pixel_agreement"] == pytest.approx(15 / 16) and fidelity.masks["classes_present"] == 2
    assert figures["mask_miou"][1] == pytest.approx(expected)
    assert family.gating(fidelity) == ("mask_miou", pytest.approx(expected))
    assert "min_cosine" in family.secondary_for([[_logits(ref)]], Budgets(min_mask_miou=0.9))


def test_segformer_is_inferred_as_semantic_segmentation():
    assert infer_task({"architectures": ["SegformerForSemanticSegmentation"]}, "transformers") == "semantic-segmentation"


def test_a_segformer_compiles_for_both_targets_and_is_judged_on_its_masks(tmp_path, quick_profile):
    model = tiny_segformer(tmp_path / "segformer")
    data = images(tmp_path / "images", count=12, size=64)
    report = edgekit.compile(str(model), targets=["cpu", "intel-cpu"], profile=str(quick_profile), data=str(data),
                             output=tmp_path / "out", no_bench=True)
    assert report.task == "semantic-segmentation" and not report.failed
    for target in report.targets:
        a = target.accuracy
        assert 0.0 <= a.mask_miou <= 1.0 and a.masks["classes"] == 4
        low, high = a.intervals["mask_miou"]
        assert low <= a.mask_miou <= high
    assert "mask mean IoU" in (tmp_path / "out" / "report.md").read_text()
