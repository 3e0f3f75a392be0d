"""Outlier channels: MatMuls fed by GELU quantised with their outlier input channels kept FP32."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

import models
from edgekit.config import load_profile
from edgekit.runtimes import OrtSession
from edgekit.stages import verify
from edgekit.stages.outliers import MAX_SHARE, RATIO, outlier_channels, split_outlier_channels
from edgekit.stages.quantize_ort import gelu_fed_matmuls, quantize_onnxruntime


def test_outlier_channels_rule():
    peaks = np.ones(64)
    assert outlier_channels(peaks) == []
    peaks[[5, 9]] = [RATIO * 1.01, 40.0]
    assert outlier_channels(peaks) == [5, 9]
    peaks[10] = RATIO  # not over the ratio
    assert outlier_channels(peaks) == [5, 9]
    many = np.ones(64)
    many[:20] = np.arange(20) + 10.0
    kept = outlier_channels(many)
    assert len(kept) == int(MAX_SHARE * 64) and kept == list(range(20 - len(kept), 20))  # the largest ones
    assert outlier_channels(np.zeros(8)) == [] and outlier_channels(np.full(8, np.nan)) == []


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    root = tmp_path_factory.mktemp("gelu-block")
    feeds = models.token_feeds(40, seed=0)
    return models.gelu_outlier_onnx(root / "block.onnx"), feeds[:24], feeds[24:], root


def _outputs(path, feeds):
    session = OrtSession(path, 1)
    return [session.run(f)[0] for f in feeds]


def test_split_is_exact_in_fp32(block):
    path, calibration, evaluation, root = block
    names = gelu_fed_matmuls(onnx.load(str(path)))
    assert len(names) == 1
    out, split = split_outlier_channels(path, root / "split.onnx", names, calibration)
    assert out == root / "split.onnx" and split.split == {names[0]: [3, 77]}
    assert set(split.fp32_nodes) == {f"{names[0]}/outliers/Gather", f"{names[0]}/outliers/MatMul"}
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    for want, got in zip(_outputs(path, evaluation), _outputs(out, evaluation)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert "2-2 channels" in split.describe()


def test_nothing_to_split_leaves_the_graph(block, tmp_path):
    path, calibration, _, _ = block
    plain = models.gelu_outlier_onnx(tmp_path / "plain.onnx")
    model = onnx.load(str(plain))
    # Without the outliers: the same block with ordinary weights.
    for init in model.graph.initializer:
        if init.name.endswith("weight") or "MatMul" in init.name:
            values = onnx.numpy_helper.to_array(init)
            init.CopyFrom(onnx.numpy_helper.from_array(np.clip(values, -0.2, 0.2).astype(values.dtype), init.name))
        elif init.name.endswith("bias") or "Add" in init.name:
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(plain))
    names = gelu_fed_matmuls(model)
    out, split = split_outlier_channels(plain, tmp_path / "split.onnx", names, calibration)
    assert out == plain and not split.split and split.describe() == "none"
    out, split = split_outlier_channels(plain, tmp_path / "split.onnx", ["no such node"], calibration)
    assert out == plain and split.unsplit == ["no such node"]


def _quantised_inputs(path) -> dict[str, bool]:
    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    return {n.name: producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "DequantizeLinear"
            for n in model.graph.node if n.op_type == "MatMul"}


def test_quantised_with_outliers_split(block):
    path, calibration, evaluation, root = block
    profile = load_profile("balanced")
    assert profile.split_outliers
    split_dir, whole_dir = root / "q-split", root / "q-whole"
    split_dir.mkdir(), whole_dir.mkdir()
    with_split = quantize_onnxruntime(path, split_dir, split_dir / "model.onnx", calibration, profile, True)
    without = quantize_onnxruntime(path, whole_dir, whole_dir / "model.onnx", calibration,
                                   dataclasses.replace(profile, split_outliers=False), True)
    assert "outlier_channels" in with_split.settings and "outlier_channels" not in without.settings
    down = gelu_fed_matmuls(onnx.load(str(path)))[0]
    split_inputs, whole_inputs = _quantised_inputs(with_split.path), _quantised_inputs(without.path)
    assert split_inputs[down] and not split_inputs[f"{down}/outliers/MatMul"]  # INT8, outliers FP32
    assert not whole_inputs[down]  # without the split the whole down projection stays FP32
    # No weight MatMul's output is requantised: it runs as MatMulIntegerToFloat.
    model = onnx.load(str(with_split.path))
    matmul_outputs = {o for n in model.graph.node if n.op_type == "MatMul" for o in n.output}
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in matmul_outputs]
    ref = _outputs(path, evaluation)
    fid = verify.compare(ref, _outputs(with_split.path, evaluation), ["y"], classifier=False)
    assert fid.cosine_min > 0.995
    # The same down projection quantised whole (the outliers inside its range) is far worse.
    whole = root / "q-naive"
    whole.mkdir()
    naive = quantize_onnxruntime(path, whole, whole / "model.onnx", calibration, profile, False)
    assert _quantised_inputs(naive.path)[down]
    naive_cosine = verify.compare(ref, _outputs(naive.path, evaluation), ["y"], classifier=False).cosine_min
    assert naive_cosine < fid.cosine_min - 0.01, (naive_cosine, fid.cosine_min)


def test_a_split_the_quantiser_skipped_is_reported(block, monkeypatch):
    """The settings never claim INT8 for a split MatMul that has no quantised input."""
    from edgekit.stages import quantize_ort
    from edgekit.stages.outliers import Split

    path, calibration, _, root = block
    monkeypatch.setattr(quantize_ort, "split_outlier_channels",
                        lambda src, dst, names, feeds: (src, Split(split={"not/in/the/graph": [1]})))
    folder = root / "q-claimed"
    folder.mkdir()
    result = quantize_onnxruntime(path, folder, folder / "model.onnx", calibration, load_profile("balanced"), True)
    assert "1 left FP32 by the quantiser" in result.settings["outlier_channels"]
    assert any("left FP32 by the quantiser" in n for n in result.notes)
