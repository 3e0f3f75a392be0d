"""The INT8 ONNX Runtime artifact's finishing step: weight MatMul biases folded into MatMulIntegerToFloat."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import onnx
import pytest

import models
from edgekit.config import load_profile
from edgekit.runtimes import OrtSession
from edgekit.stages.ort_int8 import fold_biases
from edgekit.stages.quantize_ort import quantize_onnxruntime


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    root = tmp_path_factory.mktemp("ort-int8")
    path = models.gelu_outlier_onnx(root / "block.onnx")
    feeds = models.token_feeds(24, seed=1)
    built = {}
    for per_channel in (True, False):
        folder = root / f"per-channel-{per_channel}"
        folder.mkdir()
        profile = dataclasses.replace(load_profile("balanced"), per_channel=per_channel)
        built[per_channel] = quantize_onnxruntime(path, folder, folder / "model.onnx", feeds[:16], profile, True).path
    return built, feeds[16:]


def _ops(path) -> dict[str, int]:
    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


@pytest.mark.parametrize("per_channel", [True, False])
def test_fold_keeps_the_outputs(qdq, tmp_path, per_channel):
    built, feeds = qdq
    folded = tmp_path / "folded.onnx"
    shutil.copyfile(built[per_channel], folded)
    before = _ops(folded)
    # The up projection and the INT8 part of the split down projection (its FP32 part is added after the bias).
    assert fold_biases(folded) == 2
    after = _ops(folded)
    assert after["MatMulIntegerToFloat"] == 2 and after.get("Add", 0) == before["Add"] - 2
    assert after.get("MatMul", 0) == before["MatMul"] - 2
    model = onnx.load(str(folded))
    assert any(o.domain == "com.microsoft" for o in model.opset_import)
    onnx.checker.check_model(model)
    want, got = OrtSession(built[per_channel], 1), OrtSession(folded, 1)
    for feed in feeds:
        np.testing.assert_allclose(got.run(feed)[0], want.run(feed)[0], rtol=1e-4, atol=1e-4)


def test_nothing_to_fold_leaves_the_file(qdq, tmp_path):
    built, _ = qdq
    once = tmp_path / "once.onnx"
    shutil.copyfile(built[True], once)
    fold_biases(once)
    data = once.read_bytes()
    assert fold_biases(once) == 0 and once.read_bytes() == data  # folded already: nothing left, file untouched
    fp32 = models.gelu_outlier_onnx(tmp_path / "fp32.onnx")
    data = fp32.read_bytes()
    assert fold_biases(fp32) == 0 and fp32.read_bytes() == data  # no DequantizeLinear: not an INT8 graph


def test_compile_folds_unless_the_target_says_standard_operators(bert_dir, quick_profile, tmp_path):
    import json

    import edgekit
    from edgekit.config import load_target

    edgekit.compile(str(bert_dir), targets=["cpu"], profile=str(quick_profile), output=tmp_path / "a")
    report = json.loads((tmp_path / "a/report.json").read_text())
    assert "MatMulIntegerToFloat" in report["targets"][0]["quantization"]["bias_folded"]
    assert "MatMulIntegerToFloat" in _ops(tmp_path / "a/cpu/model.onnx")
    # The residual adds read each layer norm's output unrounded; only quantised operators read its INT8 copy.
    assert "residual adds" in report["targets"][0]["quantization"]["fp32_consumers"]
    model = onnx.load(str(tmp_path / "a/cpu/model.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        for name in node.input:
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and producer.get(q.input[0]) is not None \
                    and producer[q.input[0]].op_type == "LayerNormalization":
                assert node.op_type in ("MatMul", "Gemm", "Gather"), node.op_type
    plain = tmp_path / "cpu-standard.toml"
    plain.write_text(open(load_target("cpu").source).read().replace("contrib_ops = true", "contrib_ops = false"))
    result = edgekit.compile(str(bert_dir), targets=[str(plain)], profile=str(quick_profile), output=tmp_path / "b")
    model = onnx.load(str(tmp_path / "b/cpu-standard/model.onnx"))
    assert not [n for n in model.graph.node if n.domain == "com.microsoft"]
    assert "bias_folded" not in result.targets[0].quantization
