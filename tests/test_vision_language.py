"""Vision-language embeddings (issue 19): a CLIP model compiles with both towers in one graph and is judged on the
prompt each image scores highest and on which images each prompt retrieves, not on the embeddings' cosine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import edgekit
from edgekit.errors import UsageError
from edgekit.tasks.vision_language import text_to_image

from models import images, tiny_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "m")


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory):
    """Three classes of structured pictures, ImageFolder layout."""
    root = tmp_path_factory.mktemp("pictures") / "data"
    for i, name in enumerate(("cat", "dog", "boat")):
        flat = images(root.parent / f"flat-{i}", 8, 40 + 8 * i)
        (root / name).mkdir(parents=True)
        for picture in flat.iterdir():
            shutil.copy2(picture, root / name / picture.name)
    return root


def test_clip_compiles_as_a_zero_shot_classifier(clip, labelled_images, tmp_path):
    report = edgekit.compile(str(clip), targets=["cpu", "intel-cpu"], data=str(labelled_images), output=str(tmp_path / "out"),
                             cache=False, no_bench=True, overrides={"calibration_samples": 8})
    assert report.task == "zero-shot-image-classification" and not report.failed
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["data"]["labelled"] and "3 classes as prompts" in data["data"]["origin"]
    for row in data["targets"]:
        accuracy = row["accuracy"]
        assert 0 <= accuracy["top1_agreement"] <= 1 and 0 <= accuracy["retrieval_agreement_at_5"] <= 1
        assert accuracy["retrieval_k"] == 5 and "accuracy" in accuracy["task_metrics"]
        budgets = {c["budget"]: c for c in row["budgets"]}
        assert budgets["min_top1_agreement"]["applicable"] and budgets["min_cosine"].get("gating") is False
    assert {p.name for p in (tmp_path / "out" / "cpu").iterdir()} >= {"model.onnx", "tokenizer.json", "preprocessor_config.json"}
    intel = next(t for t in report.targets if t.target == "intel-cpu")  # NNCF fails on a lookup of constants unless folded
    assert any("lookup(s) of constants folded" in note for note in intel.notes)


def test_without_data_the_verdict_is_provisional(clip, tmp_path):
    report = edgekit.compile(str(clip), targets=["cpu"], output=str(tmp_path / "out"), cache=False, no_bench=True,
                             overrides={"calibration_samples": 4, "eval_samples": 6})
    assert report.provisional and report.data["synthetic"]
    assert report.targets[0].accuracy.top1_agreement is not None


def test_text_to_image_retrieval_counts_the_images_each_prompt_ranks_first():
    prompts = np.eye(2)
    rows = [[prompts, np.array([[1.0, 0.1 * i]])] for i in range(6)] + [[prompts, np.array([[0.0, 1.0]])]]
    same, k = text_to_image(rows, rows, 0, 1, k=3)
    assert k == 3 and same.tolist() == [1.0, 1.0]
    flipped = [[prompts, r[1][:, ::-1]] for r in rows]
    differ, _ = text_to_image(rows, flipped, 0, 1, k=3)
    assert differ.max() < 1.0


def test_a_text_file_is_refused_for_a_vision_language_model(clip, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello\nworld\n")
    with pytest.raises(UsageError, match="folder of images"):
        edgekit.compile(str(clip), targets=["cpu"], data=str(text), output=str(tmp_path / "out"), cache=False, no_bench=True)


def test_a_quantiser_key_error_naming_a_graph_node_names_the_node():
    from edgekit.stages.quantize_ov import failing_node

    assert failing_node(KeyError("426 /vision_model/embeddings/position_embedding/Gather"), "") == \
        "/vision_model/embeddings/position_embedding/Gather"
    assert failing_node(RuntimeError("x"), "Could not find a node /model/Gather_3 in NNCFGraph!") == "/model/Gather_3"
    assert failing_node(KeyError("weights"), "'weights'") is None
