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
    with pytest.raises(UsageError, match="VisionEncoderDecoderModel: its task is image-to-text, which edgekit does not "
                                         "compile yet"):
        infer_task({"architectures": ["VisionEncoderDecoderModel"]}, "transformers")


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


def test_map_against_labelled_boxes_is_cocos():
    from edgekit.tasks.detection import MeanAP, detections, labelled_map

    box = [(0.3, 0.3, 0.2, 0.2), (0.7, 0.7, 0.2, 0.2)]
    truth = [np.array([[0, 0.2, 0.2, 0.4, 0.4], [1, 0.6, 0.6, 0.8, 0.8]]), np.array([[2, 0.2, 0.2, 0.4, 0.4]])]
    perfect = [_head(box, [0, 1]), _head(box, [2, 2])]  # image 2's second query: a false positive of class 2
    found = [detections(r[0], r[1], 2) for r in perfect]
    assert MeanAP(truth, found)(np.arange(2)) == (pytest.approx(1.0), pytest.approx(1.0))  # the extra box ranks last
    shifted = [(0.32, 0.3, 0.2, 0.2), (0.7, 0.7, 0.2, 0.2)]  # IoU 0.818 with its box: a hit up to 0.80, not above
    worse = [_head(shifted, [0, 1]), _head(box, [2, 2])]
    mean, ap50 = MeanAP(truth, [detections(r[0], r[1], 2) for r in worse])(np.arange(2))
    assert ap50 == pytest.approx(1.0) and mean == pytest.approx((2 + 7 / 10) / 3)  # class 0 hits at 7 of 10 IoUs
    entry = labelled_map([t.tolist() for t in truth], perfect, worse, (0, 1))
    assert entry["original"] == pytest.approx(1.0) and entry["drop"] == pytest.approx(0.1) and entry["n"] == 2
    assert entry["boxes"] == 3 and len(entry["drop_ci95"]) == 2


def _coco(folder, pictures, categories=("thing_0", "thing_1", "cat")):
    entries = sorted(pictures.glob("*.png"))
    coco = {"images": [{"id": i, "file_name": p.name, "width": 64, "height": 64} for i, p in enumerate(entries)],
            "categories": [{"id": 10 + k, "name": n} for k, n in enumerate(categories)],
            "annotations": [{"image_id": i, "category_id": 10 + i % 3, "bbox": [8, 8, 24, 16], "iscrowd": 0}
                            for i in range(len(entries))]}
    path = pictures / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def test_a_detector_on_coco_boxes_reports_map(tmp_path, quick_profile):
    model = tiny_yolos(tmp_path / "yolos")
    coco = _coco(tmp_path, images(tmp_path / "pictures", 10, 64))
    profile = tmp_path / "no-recovery.toml"  # a random model misses its box budget: no search for a better artifact
    profile.write_text(quick_profile.read_text() + "[recovery]\nenabled = false\n")
    report = edgekit.compile(str(model), targets=["cpu"], profile=str(profile), data=str(coco), output=tmp_path / "out",
                             no_bench=True, overrides={"max_drop": {"map": 1.0}})
    (cpu,) = report.targets
    entry = cpu.accuracy.task_metrics["map"]
    assert entry["n"] == report.data["eval_samples"] and 0.0 <= entry["original"] <= 1.0 and report.data["labelled"]
    assert report.data["origin"] == "instances.json (COCO, 10 images, 7 labelled boxes)"  # 'cat' is not a class
    assert any("categories the model does not know are left out: cat" in n for n in report.data["notes"])
    check = next(c for c in cpu.checks if c.budget == "max_drop.map")
    assert check.applicable and check.measured == pytest.approx(entry["drop"])
    assert "mAP (IoU 0.5:0.95)" in (tmp_path / "out" / "report.md").read_text()


def test_coco_files_that_cannot_be_used_are_refused(tmp_path):
    from edgekit.data import read_coco

    pictures = images(tmp_path / "pictures", 2, 64)
    with pytest.raises(UsageError, match="none of its categories .* is one of the model's classes"):
        read_coco(_coco(tmp_path, pictures, ("dog", "cat")), {"thing_0": 0})
    (pictures / "instances.json").write_text('{"images": []}')
    with pytest.raises(UsageError, match="not a COCO instances file"):
        read_coco(pictures / "instances.json", {"thing_0": 0})
    listing = _coco(tmp_path, pictures)
    (pictures / "img_00.png").unlink()
    with pytest.raises(UsageError, match="image img_00.png is neither beside it nor in images/"):
        read_coco(listing, {"thing_0": 0})
