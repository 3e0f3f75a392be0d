"""Task metrics against hand-computed values, budgets on them (absolute, relative, not applicable),
profile/command-line overrides, and the JUnit XML of a verdict."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgekit.config import BUDGET_METRICS, Budgets, apply_overrides, load_profile, parse_metric_option
from edgekit.errors import UsageError
from edgekit.judge import Check, judge, verdict
from edgekit.stages import metrics
from edgekit.stages.metrics import (accuracy, embeddings, evaluate, macro_f1, mean_pool, retrieval_agreement,
                                    top1_agreement, topk_agreement)


# ---------------------------------------------------------------- accuracy, macro-F1

def test_accuracy_hand_computed():
    assert accuracy(np.array([0, 1, 2, 2, 1]), np.array([0, 2, 2, 2, 1])) == pytest.approx(4 / 5)
    assert accuracy(np.array([3]), np.array([3])) == 1.0
    with pytest.raises(ValueError):
        accuracy(np.array([]), np.array([]))


def test_macro_f1_on_a_small_confusion_matrix():
    # labels 0,0,0,1,1,2 · predictions 0,0,1,1,2,2
    # class 0: TP 2, FP 0, FN 1 -> F1 = 4/5;  class 1: TP 1, FP 1, FN 1 -> 2/4;  class 2: TP 1, FP 1, FN 0 -> 2/3
    y, p = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    assert macro_f1(y, p) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert macro_f1(y, y) == 1.0


def test_macro_f1_counts_classes_only_predicted():
    # class 1 never occurs in the labels but is predicted once: its F1 is 0 and it counts
    assert macro_f1(np.array([0, 0]), np.array([0, 1])) == pytest.approx((2 / 3 + 0.0) / 2)


# ---------------------------------------------------------------- agreement

def test_top1_agreement():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]])
    cand = np.array([[2.0, 1.9, 0.0], [0.0, 1.0, 2.0], [0.0, 0.1, 5.0]])
    assert top1_agreement(ref, cand) == pytest.approx(2 / 3)


def test_top5_agreement_hand_computed():
    ref = np.array([[9, 1, 2, 3, 4, 5],    # top class 0
                    [0, 1, 2, 9, 4, 5]], float)  # top class 3
    cand = np.array([[0, 6, 5, 4, 3, 2],   # class 0 ranks last: not in the top 5
                     [0, 1, 2, 8, 4, 9]], float)  # class 3 ranks second: in the top 5
    assert topk_agreement(ref, cand, 5) == pytest.approx(0.5)
    assert top1_agreement(ref, cand) == 0.0
    assert topk_agreement(ref, ref, 5) == 1.0


def test_top5_agreement_needs_five_classes():
    ref = np.eye(4)
    assert topk_agreement(ref, ref, 5) is None


def test_agreement_accepts_batched_logits_and_nan():
    ref = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (n, 1, classes)
    cand = np.array([[[np.nan, 0.0]], [[0.0, 1.0]]])
    assert top1_agreement(ref, cand) == pytest.approx(0.5)


# ---------------------------------------------------------------- retrieval agreement

def at_angles(degrees, scales=None) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, float))
    points = np.stack([np.cos(radians), np.sin(radians)], axis=1)
    return points * (np.asarray(scales, float)[:, None] if scales is not None else 1.0)


def test_retrieval_agreement_constructed_k1():
    ref = at_angles([0, 10, 25, 45, 70, 100])
    # sample 5 moves next to sample 0: nearest neighbours 0->1, 1->0, 5->4 become 0->5, 1->5, 5->0
    cand = at_angles([0, 10, 25, 45, 70, 3])
    value, k = retrieval_agreement(ref, cand, k=1)
    assert k == 1
    assert value == pytest.approx(3 / 6)


def test_retrieval_agreement_constructed_k2_is_scale_free():
    ref = at_angles([0, 10, 25, 45, 70, 100])
    cand = at_angles([0, 10, 25, 45, 70, 3], scales=[1, 5, 0.2, 3, 7, 0.5])  # cosine ignores length
    # neighbour sets (original | artifact): 0 {1,2}|{5,1} 1/2 · 1 {0,2}|{5,0} 1/2 · 2 {1,3}|{1,3} 1 ·
    # 3 {2,4}|{2,4} 1 · 4 {3,5}|{3,2} 1/2 · 5 {4,3}|{0,1} 0
    value, k = retrieval_agreement(ref, cand, k=2)
    assert k == 2
    assert value == pytest.approx((0.5 + 0.5 + 1 + 1 + 0.5 + 0) / 6)


def test_retrieval_agreement_identical_and_capped_k():
    x = np.random.default_rng(0).standard_normal((10, 8))
    assert retrieval_agreement(x, x, k=5) == (1.0, 5)
    # 3 samples: k is capped at n - 1 = 2, and every sample's neighbours are all the others
    value, k = retrieval_agreement(x[:3], -x[:3] + 0.01, k=5)
    assert (value, k) == (1.0, 2)
    assert retrieval_agreement(x[:1], x[:1]) == (None, 0)


def test_nearest_neighbours_excludes_self_and_breaks_ties_by_index():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    nn = metrics.nearest_neighbours(x, 2)
    assert nn.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]


def test_zero_embeddings_do_not_make_nan():
    x = np.zeros((4, 3))
    value, k = retrieval_agreement(x, x, 2)
    assert math.isfinite(value) and k == 2


# ---------------------------------------------------------------- embeddings from outputs

def test_sentence_embedding_output_wins():
    outputs = [[np.ones((1, 3, 2)), np.array([[1.0, 2.0]])], [np.ones((1, 3, 2)), np.array([[3.0, 4.0]])]]
    e = embeddings(outputs, ["token_embeddings", "sentence_embedding"])
    assert e.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_first_output_is_mean_pooled_with_the_mask():
    hidden = np.array([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert mean_pool(hidden, np.array([[1, 1, 0]])).tolist() == [[2.0, 2.0]]
    assert mean_pool(hidden, None).tolist() == [[104 / 3, 104 / 3]]
    assert mean_pool(hidden, np.array([[1, 1]])).tolist() == [[104 / 3, 104 / 3]]  # mask of another length: ignored
    e = embeddings([[hidden, np.zeros((1, 2))]], ["last_hidden_state", "pooler_output"], [np.array([[1, 1, 0]])])
    assert e.tolist() == [[2.0, 2.0]]


# ---------------------------------------------------------------- evaluate: one artifact

def outputs(logits):
    return [[np.asarray(row, float)[None]] for row in logits]


def test_evaluate_classifier_with_labels():
    ref = outputs([[2, 0, 0], [0, 2, 0], [0, 0, 2], [2, 0, 0]])   # predicts 0 1 2 0
    cand = outputs([[2, 0, 0], [0, 2, 0], [2, 0, 0], [2, 0, 0]])  # predicts 0 1 0 0
    labels = [0, 1, 2, 1]
    tm = evaluate(ref, cand, ["logits"], "classifier", labels)
    entry = tm.task_metrics["accuracy"]
    assert {k: entry[k] for k in ("original", "artifact", "drop", "relative")} == pytest.approx(
        {"original": 0.75, "artifact": 0.5, "drop": 0.25, "relative": 0.5 / 0.75})
    assert entry["n"] == 4
    # Wilson 3 of 4 and 2 of 4; the paired drop: 1 sample original-right-artifact-wrong, none the reverse
    assert entry["original_ci95"] == pytest.approx([0.300642, 0.954413], abs=1e-5)
    assert entry["artifact_ci95"] == pytest.approx([0.150039, 0.849961], abs=1e-5)
    assert entry["drop_ci95"][0] < 0 < 0.25 < entry["drop_ci95"][1]
    # original: class 0 TP1 FP1 -> 2/3 · class 1 TP1 FN1 -> 2/3 · class 2 TP1 -> 1
    assert tm.task_metrics["macro_f1"]["original"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # artifact: class 0 TP1 FP2 -> 2/4 · class 1 TP1 FN1 -> 2/3 · class 2 TP0 FN1 -> 0
    assert tm.task_metrics["macro_f1"]["artifact"] == pytest.approx((2 / 4 + 2 / 3 + 0) / 3)
    assert tm.top1_agreement == pytest.approx(0.75)
    assert tm.top5_agreement is None and "fewer than 5 classes" in tm.not_measured["top5_agreement"]
    assert tm.labelled_samples == 4
    figures = tm.budget_figures()
    assert figures["accuracy"][:2] == (0.75, 0.5) and figures["accuracy"][2] == tuple(entry["drop_ci95"])
    assert figures["top1_agreement"][:2] == (1.0, 0.75)
    lo, hi = tm.intervals["top1_agreement"]
    assert figures["top1_agreement"][2] == pytest.approx((1 - hi, 1 - lo))
    assert isinstance(figures["retrieval_agreement_at_5"], str)


def test_evaluate_classifier_without_labels():
    ref = outputs(np.eye(6))
    tm = evaluate(ref, ref, ["logits"], "classifier", None)
    assert tm.task_metrics == {}
    assert (tm.top1_agreement, tm.top5_agreement) == (1.0, 1.0)
    assert tm.budget_figures()["accuracy"] == "no labels in the data"


def test_evaluate_embedding_model():
    ref = [[at_angles([a])[None]] for a in (0, 10, 25, 45, 70, 100)]  # (1, 1, 2): pooled over the sequence axis
    cand = [[at_angles([a])[None]] for a in (0, 10, 25, 45, 70, 3)]
    tm = evaluate(ref, cand, ["last_hidden_state"], "embedding")
    assert tm.retrieval_k == 5 and tm.retrieval_agreement_at_5 is not None
    assert 0.0 <= tm.retrieval_agreement_at_5 <= 1.0
    assert tm.top1_agreement is None and tm.task_metrics == {}
    assert tm.budget_figures()["accuracy"] == "not a classifier"


# ---------------------------------------------------------------- budgets: absolute, relative, not applicable

FIGURES = dict(cosine_min=0.99, top1=0.9, latency_p90_ms=1.0, size_bytes=1)


def by_name(checks):
    return {c.budget: c for c in checks}


def test_max_drop_absolute():
    budgets = Budgets(min_cosine=0.9, max_drop={"accuracy": 0.05, "macro_f1": 0.01})
    checks = by_name(judge(budgets, **FIGURES, metrics={"accuracy": (0.80, 0.75), "macro_f1": (0.70, 0.68)}))
    acc, f1 = checks["max_drop.accuracy"], checks["max_drop.macro_f1"]
    assert acc.passed is True and acc.measured == pytest.approx(0.05)  # inclusive, despite 0.8 - 0.75 > 0.05 in floats
    assert (acc.original, acc.artifact) == (0.80, 0.75)
    assert f1.passed is False and f1.measured == pytest.approx(0.02)
    assert verdict(list(checks.values())) == "fail"


def test_negative_max_drop_is_impossible():
    checks = judge(Budgets(min_cosine=0.0, max_drop={"accuracy": -1.0}), **FIGURES, metrics={"accuracy": (0.5, 0.5)})
    assert by_name(checks)["max_drop.accuracy"].passed is False


def test_min_relative_mlperf_style():
    budgets = Budgets(min_cosine=0.9, min_relative={"accuracy": 0.99})
    ok = by_name(judge(budgets, **FIGURES, metrics={"accuracy": (0.80, 0.792)}))["min_relative.accuracy"]
    assert ok.passed is True and ok.measured == pytest.approx(0.99)
    bad = by_name(judge(budgets, **FIGURES, metrics={"accuracy": (0.80, 0.79)}))["min_relative.accuracy"]
    assert bad.passed is False and bad.measured == pytest.approx(0.9875)
    zero = by_name(judge(budgets, **FIGURES, metrics={"accuracy": (0.0, 0.0)}))["min_relative.accuracy"]
    assert zero.passed is True and zero.measured == 1.0


def test_agreement_budgets_compare_with_one():
    budgets = Budgets(min_cosine=0.9, max_drop={"top1_agreement": 0.05}, min_relative={"retrieval_agreement_at_5": 0.9})
    checks = by_name(judge(budgets, **FIGURES, metrics={"top1_agreement": (1.0, 0.9), "retrieval_agreement_at_5": (1.0, 0.95)}))
    assert checks["max_drop.top1_agreement"].passed is False and checks["max_drop.top1_agreement"].measured == pytest.approx(0.1)
    assert checks["min_relative.retrieval_agreement_at_5"].passed is True


def test_budget_on_unmeasurable_metric_is_not_applicable():
    budgets = Budgets(min_cosine=0.9, max_drop={"accuracy": 0.01}, min_relative={"macro_f1": 0.99})
    checks = judge(budgets, **FIGURES, metrics={"accuracy": "no labels in the data", "macro_f1": "no labels in the data"})
    named = by_name(checks)
    for name in ("max_drop.accuracy", "min_relative.macro_f1"):
        c = named[name]
        assert (c.applicable, c.passed, c.measured, c.reason) == (False, None, None, "no labels in the data")
        assert c.to_dict()["applicable"] is False and c.to_dict()["reason"] == "no labels in the data"
    assert verdict(checks) == "pass"  # listed as not applicable; it does not decide the verdict
    # without figures at all, the budget is still listed
    assert by_name(judge(budgets, **FIGURES))["max_drop.accuracy"].applicable is False


# ---------------------------------------------------------------- profiles and overrides

def write_profile(tmp_path, budgets: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(f'precision = "int8"\n[budgets]\nmin_cosine = 0.9\n{budgets}\n')
    return str(path)


def test_profile_budget_tables(tmp_path):
    p = load_profile(write_profile(tmp_path, "max_drop = { accuracy = 0.01, macro_f1 = 0 }\nmin_relative = { accuracy = 0.99 }"))
    assert p.budgets.max_drop == {"accuracy": 0.01, "macro_f1": 0.0}
    assert p.budgets.min_relative == {"accuracy": 0.99}
    assert all(isinstance(v, float) for v in p.budgets.max_drop.values())
    sub = load_profile(write_profile(tmp_path, "[budgets.max_drop]\ntop5_agreement = 0.02"))
    assert sub.budgets.max_drop == {"top5_agreement": 0.02}


@pytest.mark.parametrize("line, fragments", [
    ("max_drop = { acuracy = 0.01 }", ["unknown metric 'acuracy'", "budgets.max_drop", "did you mean 'accuracy'"]),
    ("min_relative = { bleu = 0.9 }", ["unknown metric 'bleu'", "valid metrics", "macro_f1"]),
    ("max_drop = { accuracy = 'x' }", ["budgets.max_drop.accuracy", "finite number"]),
    ("max_drop = { accuracy = 2 }", ["budgets.max_drop.accuracy", "out of range"]),
    ("min_relative = { accuracy = -0.5 }", ["budgets.min_relative.accuracy", "out of range"]),
    ("max_drop = 0.01", ["budgets.max_drop", "must be dict"]),
])
def test_profile_budget_tables_validated(tmp_path, line, fragments):
    with pytest.raises(UsageError) as info:
        load_profile(write_profile(tmp_path, line))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_overrides_replace_the_profile(tmp_path):
    base = load_profile(write_profile(tmp_path, "max_drop = { macro_f1 = 0.02 }"))
    p = apply_overrides(base, {"min_cosine": 0.995, "max_drop": ["accuracy=0.01", "macro_f1=0.05"], "max_latency_ms": 12,
                               "max_size_mb": 3.5, "calibration_samples": 5, "eval_samples": 7, "seed": 3,
                               "min_relative": {"accuracy": 0.99}})
    assert p.budgets == Budgets(min_cosine=0.995, max_latency_ms=12.0, max_size_mb=3.5,
                                max_drop={"macro_f1": 0.05, "accuracy": 0.01}, min_relative={"accuracy": 0.99})
    assert (p.calibration_samples, p.eval_samples, p.seed) == (5, 7, 3)
    assert base.budgets.max_drop == {"macro_f1": 0.02}  # the loaded profile itself is untouched
    assert apply_overrides(base, {"min_cosine": None, "max_drop": [], "seed": None}) is base


@pytest.mark.parametrize("overrides, fragments", [
    ({"min_cosine": 1.5}, ["--min-cosine", "out of range"]),
    ({"max_drop": ["accuracy"]}, ["--max-drop", "METRIC=NUMBER"]),
    ({"max_drop": ["accuracy=lots"]}, ["--max-drop", "METRIC=NUMBER"]),
    ({"max_drop": ["acc=0.1"]}, ["unknown metric 'acc'", "--max-drop", "accuracy"]),
    ({"eval_samples": 0}, ["--eval-samples", "out of range"]),
    ({"seed": -1}, ["--seed", "out of range"]),
    ({"max_size_mb": -2}, ["--max-size-mb", "out of range"]),
    ({"min_cosin": 0.9}, ["unknown override 'min_cosin'", "min_cosine"]),
])
def test_bad_overrides(overrides, fragments):
    with pytest.raises(UsageError) as info:
        apply_overrides(load_profile("balanced"), overrides)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_parse_metric_option():
    assert parse_metric_option("accuracy=0.01", "--max-drop") == ("accuracy", 0.01)
    assert parse_metric_option(" macro_f1 = -1 ", "--max-drop") == ("macro_f1", -1.0)
    assert set(BUDGET_METRICS) == set(metrics.BUDGET_METRICS)


# ---------------------------------------------------------------- JUnit XML

def test_junit_document():
    from types import SimpleNamespace

    from edgekit.junit import to_junit

    checks = [Check("min_cosine", 0.99, 0.995, True),
              Check("max_drop.accuracy", 0.01, 0.05, False, original=0.8, artifact=0.75),
              Check("min_relative.macro_f1", 0.99, None, None, applicable=False, reason="no labels in the data")]
    target = SimpleNamespace(target="cpu", profile="p", runtime="onnxruntime", precision="int8", verdict="fail",
                             build_seconds=1.5, checks=checks)
    other = SimpleNamespace(target="intel-cpu", profile="p", runtime="openvino", precision="int8", verdict="pass",
                            build_seconds=2.0, checks=checks[:1])
    root = ET.fromstring(to_junit(SimpleNamespace(source={"location": "m <&> 'x'"}, targets=[target, other], provisional="")))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "1", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["edgekit.cpu", "edgekit.intel-cpu"]
    cases = suites[0].findall("testcase")
    assert [c.get("name") for c in cases] == ["min_cosine", "max_drop.accuracy", "min_relative.macro_f1"]
    assert {c.get("classname") for c in cases} == {"edgekit.cpu"}
    failure = cases[1].find("failure")
    assert "measured 0.05" in failure.get("message") and "0.01" in failure.get("message")
    assert "original 0.8" in failure.text
    assert cases[2].find("skipped").get("message") == "not applicable: no labels in the data"
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
