"""End to end through `edgekit compile`: labelled data, task metrics, budgets that gate, overrides, JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit.cli import main
from edgekit.data import CORPUS, read_lines


def run(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def labelled_jsonl(tmp_path_factory) -> Path:
    """Corpus lines labelled class_0..class_2 (the tiny BERT's id2label)."""
    path = tmp_path_factory.mktemp("labelled") / "reviews.jsonl"
    lines = read_lines(CORPUS)[:30]
    path.write_text("".join(json.dumps({"text": t, "label": f"class_{i % 3}"}) + "\n" for i, t in enumerate(lines)))
    return path


def load(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()  # valid XML, or this raises
    assert root.tag == "testsuites"
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left beside it
    return root


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}/{c.get('name')}": c for c in root.iter("testcase")}


def test_labelled_jsonl_reports_task_metrics_and_junit(bert_dir, labelled_jsonl, quick_profile, tmp_path):
    out, xml = tmp_path / "b", tmp_path / "ci" / "edgekit.xml"
    result = run(str(bert_dir), "--data", str(labelled_jsonl), "-p", str(quick_profile), "-o", str(out), "-q",
                 "--max-drop", "accuracy=0.5", "--junit", str(xml))
    assert result.exit_code == 0, result.output
    report = load(out)
    assert report["data"]["labelled"] is True and "labelled" in report["data"]["origin"]
    acc = report["targets"][0]["accuracy"]
    for metric in ("accuracy", "macro_f1"):
        m = acc["task_metrics"][metric]
        assert 0 <= m["original"] <= 1 and 0 <= m["artifact"] <= 1
        assert m["drop"] == pytest.approx(m["original"] - m["artifact"])
    # every one of the 30 records calibration did not use is evaluated (the quick profile calibrates on 16)
    assert acc["labelled_samples"] == report["data"]["eval_samples"] == acc["task_metrics"]["accuracy"]["n"] == 30 - 16
    assert "top5_agreement" not in acc  # 3 classes
    for key in ("cosine_min", "cosine_mean", "max_abs_error", "snr_db", "top1_agreement"):
        assert key in acc
    checks = {c["budget"]: c for c in report["targets"][0]["budgets"]}
    assert checks["max_drop.accuracy"]["passed"] is True and checks["max_drop.accuracy"]["applicable"] is True
    md = (out / "report.md").read_text()
    assert "## Task metrics" in md and "| cpu | accuracy |" in md and "max_drop.accuracy ≤ 0.5" in md
    root = junit(xml)
    assert root.get("tests") == str(len(checks)) and root.get("failures") == "0"
    assert set(cases(root)) == {f"edgekit.cpu/{name}" for name in checks}


def test_impossible_drop_budget_fails_with_junit_failure(bert_dir, labelled_jsonl, quick_profile, tmp_path):
    out, xml = tmp_path / "b", tmp_path / "edgekit.xml"
    xml.write_text("stale")  # replaced, never appended to
    result = run(str(bert_dir), "--data", str(labelled_jsonl), "-p", str(quick_profile), "-o", str(out), "-q",
                 "--max-drop", "accuracy=-1", "--junit", str(xml))
    assert result.exit_code == 1, result.output
    assert "budget missed: cpu (max_drop.accuracy)" in result.stderr
    report = load(out)
    assert report["verdict"] == "fail"
    root = junit(xml)
    assert root.get("failures") == "1"
    failure = cases(root)["edgekit.cpu/max_drop.accuracy"].find("failure")
    assert failure is not None and "limit ≤ -1" in failure.get("message")
    assert cases(root)["edgekit.cpu/min_cosine"].find("failure") is None


def test_overrides_change_data_sizes_and_the_verdict(bert_dir, labelled_jsonl, quick_profile, tmp_path):
    out = tmp_path / "b"
    result = run(str(bert_dir), "--data", str(labelled_jsonl), "-p", str(quick_profile), "-o", str(out), "-q",
                 "--eval-samples", "6", "--calibration-samples", "5", "--seed", "3",
                 "--min-cosine", "0.5", "--max-size-mb", "0.001", "--max-latency-ms", "100000")
    assert result.exit_code == 1, result.output
    assert "budget missed: cpu (max_size_mb)" in result.stderr
    report = load(out)
    assert (report["data"]["eval_samples"], report["data"]["calibration_samples"], report["data"]["seed"]) == (6, 5, 3)
    checks = {c["budget"]: c for c in report["targets"][0]["budgets"]}
    assert checks["min_cosine"]["limit"] == 0.5 and checks["min_cosine"]["passed"] is True
    assert checks["max_latency_ms"]["passed"] is True
    assert checks["max_size_mb"]["passed"] is False


def test_budget_without_labels_is_not_applicable(bert_dir, quick_profile, tmp_path):
    profile = tmp_path / "labelled.toml"
    profile.write_text(quick_profile.read_text().replace("[budgets]\n", "[budgets]\nmin_relative = { accuracy = 0.99 }\n"))
    out, xml = tmp_path / "b", tmp_path / "j.xml"
    result = run(str(bert_dir), "-p", str(profile), "-o", str(out), "-q", "--junit", str(xml))  # built-in corpus: no labels
    assert result.exit_code == 0, result.output
    report = load(out)
    assert report["data"]["labelled"] is False
    check = {c["budget"]: c for c in report["targets"][0]["budgets"]}["min_relative.accuracy"]
    assert check["applicable"] is False and check["passed"] is None and check["measured"] is None
    assert "no labels" in check["reason"]
    assert "task_metrics" not in report["targets"][0]["accuracy"]
    md = (out / "report.md").read_text()
    assert "min_relative.accuracy ≥ 0.99 — **not applicable** (no labels in the data)" in md
    root = junit(xml)
    assert root.get("skipped") == "2"  # the accuracy budget, and the classifier's logit cosine (reported, not gated)
    assert cases(root)["edgekit.cpu/min_relative.accuracy"].find("skipped") is not None
    assert "not gated" in cases(root)["edgekit.cpu/min_cosine"].find("skipped").get("message")


def test_embedding_model_reports_retrieval_agreement(bert_dir, quick_profile, tmp_path):
    out = tmp_path / "fe"
    result = run(str(bert_dir), "--task", "feature-extraction", "-p", str(quick_profile), "-o", str(out), "-q",
                 "--max-drop", "retrieval_agreement_at_5=1")
    assert result.exit_code == 0, result.output
    acc = load(out)["targets"][0]["accuracy"]
    assert 0.0 <= acc["retrieval_agreement_at_5"] <= 1.0 and acc["retrieval_k"] == 5
    assert "top1_agreement" not in acc
    assert "retrieval agreement @5" in (out / "report.md").read_text()


def test_csv_with_named_columns(bert_dir, quick_profile, tmp_path):
    path = tmp_path / "d.csv"
    rows = ["id,review,stars"] + [f'{i},"{t.replace(chr(34), "")}",{i % 3}' for i, t in enumerate(read_lines(CORPUS)[:20])]
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "b"
    result = run(str(bert_dir), "--data", str(path), "--text-column", "review", "--label-column", "stars",
                 "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert "accuracy" in load(out)["targets"][0]["accuracy"]["task_metrics"]


def test_image_folder_classes(vit_dir, quick_profile, tmp_path):
    import models

    for i in range(5):
        models.images(tmp_path / "imgs" / f"label_{i}", count=2, size=32 + 4 * i)
    out = tmp_path / "vit"
    result = run(str(vit_dir), "--data", str(tmp_path / "imgs"), "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code in (0, 1), result.output
    report = load(out)
    acc = report["targets"][0]["accuracy"]
    assert report["data"]["labelled"] is True
    assert set(acc["task_metrics"]) == {"accuracy", "macro_f1"}
    assert "top5_agreement" in acc  # 5 classes


def test_onnx_classifier_with_npz_labels(cnn_onnx, quick_profile, tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, input=rng.random((10, 1, 3, 16, 16), dtype=np.float32), labels=np.arange(10) % 4)
    out = tmp_path / "cnn"
    result = run(str(cnn_onnx), "--shape", "input=1,3,16,16", "--task", "image-classification", "--data", str(npz),
                 "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code in (0, 1), result.output
    report = load(out)
    assert report["task"] == "image-classification" and report["data"]["labelled"] is True
    assert "accuracy" in report["targets"][0]["accuracy"]["task_metrics"]


# ------------------------------------------------------------------ bad input: exit 2, one line

def test_malformed_jsonl_line_through_the_cli(bert_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": "class_0"}\n{"text": "fine too", "label": "class_1"}\n{"text": oops}\n')
    assert_usage_error(run(str(bert_dir), "--data", str(path), "-o", str(tmp_path / "o"), "-q"), "bad.jsonl", "line 3", "not valid JSON")
    assert not (tmp_path / "o").exists()


def test_csv_without_text_column_through_the_cli(bert_dir, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("review,label\ngood,class_0\nbad,class_1\n")
    assert_usage_error(run(str(bert_dir), "--data", str(path), "-o", str(tmp_path / "o"), "-q"),
                       "bad.csv", "no column 'text'", "columns: review, label")


def test_unknown_label_through_the_cli(bert_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "class_0"}\n{"text": "b", "label": "positive"}\n')
    assert_usage_error(run(str(bert_dir), "--data", str(path), "-o", str(tmp_path / "o"), "-q"),
                       "bad.jsonl", "line 2", "'positive'", "known: class_0, class_1, class_2")


def test_undecodable_image_through_the_cli(vit_dir, tmp_path):
    import models

    models.images(tmp_path / "imgs" / "label_0", count=2)
    models.images(tmp_path / "imgs" / "label_1", count=2)
    (tmp_path / "imgs" / "label_1" / "zz_broken.png").write_bytes(b"not an image")
    assert_usage_error(run(str(vit_dir), "--data", str(tmp_path / "imgs"), "-o", str(tmp_path / "o"), "-q"),
                       "zz_broken.png", "not a readable image")


@pytest.mark.parametrize("labels, fragment", [(np.arange(3), "'labels' has 3 entries"),
                                              (np.ones(6, np.float32), "'labels' has dtype float32")])
def test_bad_npz_labels_through_the_cli(cnn_onnx, tmp_path, labels, fragment):
    npz = tmp_path / "bad.npz"
    np.savez(npz, input=np.zeros((6, 1, 3, 16, 16), np.float32), labels=labels)
    assert_usage_error(run(str(cnn_onnx), "--shape", "input=1,3,16,16", "--data", str(npz), "-o", str(tmp_path / "o"), "-q"),
                       "bad.npz", fragment)


def test_bad_budget_options(cnn_onnx, tmp_path):
    args = [str(cnn_onnx), "--shape", "input=1,3,16,16", "-o", str(tmp_path / "o"), "-q"]
    assert_usage_error(run(*args, "--max-drop", "acuracy=0.1"), "unknown metric 'acuracy'", "did you mean 'accuracy'")
    assert_usage_error(run(*args, "--max-drop", "accuracy"), "--max-drop", "METRIC=NUMBER")
    assert_usage_error(run(*args, "--min-cosine", "1.5"), "--min-cosine", "out of range")
    assert_usage_error(run(*args, "--eval-samples", "0"), "--eval-samples", "out of range")
    (tmp_path / "folder").mkdir()
    assert_usage_error(run(*args, "--junit", str(tmp_path / "folder")), "--junit", "is a folder")
    assert not (tmp_path / "o").exists()


def test_unknown_metric_in_profile(cnn_onnx, tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.9\nmax_drop = { acc = 0.01 }\n')
    assert_usage_error(run(str(cnn_onnx), "-p", str(profile), "-q"), "unknown metric 'acc'", "budgets.max_drop", "accuracy")
