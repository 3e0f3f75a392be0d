"""ONNX Runtime sessions: the options an artifact is verified and timed with, and the runtime.json that records them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import UsageError
from edgekit.runtimes import (DISABLE_OPTIMIZERS_KEY, OrtSession, open_recorded, ort_options,
                              recorded_disabled_optimizers)


@pytest.fixture(scope="module")
def residual_norm(tmp_path_factory):
    """x + skip, then LayerNormalization: the pattern ONNX Runtime fuses into SkipLayerNormalization."""
    hidden = 16
    nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", hidden]) for n in ("x", "skip")]
    inits = [numpy_helper.from_array(np.linspace(0.5, 1.5, hidden, dtype=np.float32), "gamma"),
             numpy_helper.from_array(np.linspace(-0.1, 0.1, hidden, dtype=np.float32), "beta")]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                                  ["batch", "seq", hidden])], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("residual") / "residual.onnx"
    onnx.save(model, str(path))
    return path


def _optimized_ops(path, options, tmp_path) -> set[str]:
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}


def test_the_session_config_entry_reaches_onnx_runtime(residual_norm, tmp_path):
    """The entry as edgekit writes it (names joined by ';') is the one ONNX Runtime reads."""
    assert "SkipLayerNormalization" in _optimized_ops(residual_norm, ort_options(1), tmp_path)
    kept = _optimized_ops(residual_norm, ort_options(1, ("SkipLayerNormFusion", "GeluFusionL2")), tmp_path)
    assert "SkipLayerNormalization" not in kept and {"Add", "LayerNormalization"} <= kept


def test_settings_record_it_and_open_recorded_reads_it_back(residual_norm):
    plain = OrtSession(residual_norm, 1)
    assert "session_config" not in plain.settings
    session = OrtSession(residual_norm, 1, disabled_optimizers=("SkipLayerNormFusion",))
    assert session.settings["session_config"] == {DISABLE_OPTIMIZERS_KEY: "SkipLayerNormFusion"}
    recorded = json.loads(json.dumps(session.settings))  # as runtime.json holds it
    assert recorded_disabled_optimizers(recorded) == ("SkipLayerNormFusion",)
    reopened = open_recorded(residual_norm, recorded, 1)
    assert reopened.settings == session.settings
    feed = {"x": np.random.default_rng(0).normal(size=(2, 3, 16)).astype(np.float32),
            "skip": np.ones((2, 3, 16), np.float32)}
    np.testing.assert_allclose(reopened.run(feed)[0], plain.run(feed)[0], rtol=1e-5, atol=1e-5)


def test_a_bad_recorded_entry_is_a_usage_error():
    assert recorded_disabled_optimizers({}) == () and recorded_disabled_optimizers({"session_config": {}}) == ()
    for bad in ({"session_config": {DISABLE_OPTIMIZERS_KEY: ["SkipLayerNormFusion"]}}, {"session_config": "x"}):
        with pytest.raises(UsageError, match="session_config"):
            recorded_disabled_optimizers(bad)
