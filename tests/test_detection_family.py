"""Object detectors are decided by their boxes (tasks/detection.py; issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgekit
from edgekit import tasks
from edgekit.errors import UsageError
from edgekit.source import infer_task
from edgekit.tasks import detection

from models import images, tiny_yolos


def _head(boxes: list[tuple[float, float, float, float]], classes: list[int], confident: bool = True, n_classes: int = 3):
    """One image's logits [1, Q, C+1] and boxes [1, Q, 4] with the given queries detected."""
    q = len(boxes)
    logits = np.full((1, q, n_classes + 1), -4.0, dtype=np.float32)
    logits[0, :, -1] = 0.0
    for i, c in enumerate(classes):
        logits[0, i, c] = 6.0 if confident else -0.2
    return [logits, np.array([boxes], dtype=np.float32)]


def test_boxes_match_by_class_and_iou():
    family = tasks.for_task("object-detection")
    box = [(0.3, 0.3, 0.2, 0.2), (0.7, 0.7, 0.2, 0.2)]
    original = [_head(box, [0, 1]), _head(box, [2, 2])]
    moved = [(0.3, 0.3, 0.2, 0.2), (0.2, 0.8, 0.2, 0.2)]  # the second box moved away: no longer a match
    artifact = [_head(moved, [0, 1]), _head(box, [2, 1])]  # and one class changed in image 2
    fidelity, figures = family.evaluate(original, artifact, ["logits", "pred_boxes"], None, None)
    assert fidelity.boxes["original_boxes"] == 4 and fidelity.boxes["artifact_boxes"] == 4
    assert fidelity.boxes["recall"] == pytest.approx(0.5) and fidelity.box_agreement == pytest.approx(0.5)
    assert fidelity.boxes["selection"] == "score >= 0.5"
    assert figures["box_agreement"][1] == pytest.approx(0.5)
    assert family.gating(fidelity) == ("box_agreement", pytest.approx(0.5))
    same, _ = family.evaluate(original, original, ["logits", "pred_boxes"], None, None)
    assert same.box_agreement == 1.0 and same.boxes["matched_iou_mean"] == pytest.approx(1.0)


def test_without_confident_boxes_the_top_queries_are_compared():
    box = [(0.2 + 0.1 * i, 0.5, 0.1, 0.1) for i in range(6)]
    original = [_head(box, [0] * 6, confident=False)]
    fidelity, _ = tasks.for_task("object-detection").evaluate(original, original, ["a", "b"], None, None)
    assert fidelity.boxes["selection"] == "top 5 queries per image" and fidelity.boxes["original_boxes"] == 5


def test_the_boxes_are_found_by_shape_and_range_when_not_named():
    logits, boxes = _head([(0.5, 0.5, 0.2, 0.2)], [0])  # 3 classes + "no object": logits end in 4 too
    assert detection.head([[logits * 3 - 1, boxes]], ["x", "y"]) == (0, 1)
    assert detection.head([[boxes, logits * 3 - 1]], ["x", "y"]) == (1, 0)


def test_detection_models_are_inferred_and_other_tasks_named():
    assert infer_task({"architectures": ["YolosForObjectDetection"]}, "transformers") == "object-detection"
    with pytest.raises(UsageError, match="T5ForConditionalGeneration: its task is text2text-generation, "
                                         "which edgekit does not compile yet"):
        infer_task({"architectures": ["T5ForConditionalGeneration"]}, "transformers")


def test_a_yolos_detector_compiles_for_both_targets_and_is_judged_on_its_boxes(tmp_path, quick_profile):
    model = tiny_yolos(tmp_path / "yolos")
    data = images(tmp_path / "images", count=12, size=64)
    report = edgekit.compile(str(model), targets=["cpu", "intel-cpu"], profile=str(quick_profile), data=str(data),
                             output=tmp_path / "out", no_bench=True, overrides={"min_cosine": 0.5})
    assert report.task == "object-detection" and not report.failed
    for target in report.targets:
        a = target.accuracy
        assert a.box_agreement is not None and 0.0 <= a.box_agreement <= 1.0
        low, high = a.intervals["box_agreement"]
        assert low <= a.box_agreement <= high
        assert a.boxes["original_boxes"] > 0
    stored = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "box_agreement" in stored["targets"][0]["accuracy"]
    assert "box agreement (F1)" in (tmp_path / "out" / "report.md").read_text()
