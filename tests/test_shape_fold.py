"""Folding shape arithmetic into constants (stages/shape_fold.py): same outputs, fewer nodes, never a wrong size."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.source import resolve_source
from edgekit.stages.export import export_huggingface
from edgekit.stages import shape_fold
from edgekit.stages.shape_fold import MAX_FOLDED_ELEMENTS, fold_shapes


def _run(path, feed, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)


def _ops(path) -> dict[str, int]:
    ops: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return ops


def _save(tmp_path, nodes, inputs, outputs, initializers=(), name="g.onnx", opset=17):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory, bert_dir):
    return export_huggingface(resolve_source(str(bert_dir)), tmp_path_factory.mktemp("fold-export")).onnx_path


def test_bert_export_folds_to_identical_outputs(bert_onnx, tmp_path):
    result = fold_shapes(bert_onnx, tmp_path / "folded.onnx")
    assert result.changed and result.path == tmp_path / "folded.onnx"
    assert result.reshapes >= 2 * 4  # each layer's Q, K, V and context reshapes
    before, after = _ops(bert_onnx), _ops(result.path)
    assert sum(after.values()) == sum(before.values()) - result.removed
    assert after.get("Shape", 0) < before["Shape"] and after.get("Sqrt", 0) == 0  # the attention scale is a constant now
    folded = onnx.load(str(result.path))
    constants = {i.name for i in folded.graph.initializer}
    reshape_targets = [n.input[1] for n in folded.graph.node if n.op_type == "Reshape"]
    assert sum(t in constants for t in reshape_targets) >= 8
    rng = np.random.default_rng(0)
    for batch, length in ((1, 1), (2, 9), (3, 64), (1, 200)):
        ids = rng.integers(100, 30000, (batch, length))
        mask = np.ones((batch, length), np.int64)
        mask[0, length // 2 + 1:] = 0
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        names = {i.name for i in ort.InferenceSession(str(bert_onnx)).get_inputs()}
        feed = {k: v for k, v in feed.items() if k in names}
        for want, got in zip(_run(bert_onnx, feed), _run(result.path, feed)):
            assert want.shape == got.shape
            np.testing.assert_array_equal(want, got)  # the same computation, bit for bit
        for want, got in zip(_run(bert_onnx, feed, ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                             _run(result.path, feed, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
            np.testing.assert_allclose(want, got, rtol=1e-4, atol=1e-5)


def test_reshape_copies_only_an_axis_proven_equal(tmp_path):
    """x [n, 6] reshaped to y's first axis: 0 ("copy") only where y's axis is x's (same dimension name)."""
    nodes = [helper.make_node("Shape", ["y"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"]),
             helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["out"])]
    inits = [_i64("zero", 0), _i64("zero_axes", [0]), _i64("minus_one", [-1])]
    out = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    same = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6]),
                                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], out, inits, "same.onnx")
    other = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 6]),
                                    helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])], out, inits, "other.onnx")
    folded = fold_shapes(same, tmp_path / "same-folded.onnx")
    assert folded.reshapes == 1 and _ops(folded.path) == {"Reshape": 1}
    feed = {"x": np.arange(24, dtype=np.float32).reshape(4, 6), "y": np.zeros((4, 3), np.float32)}
    np.testing.assert_array_equal(_run(same, feed)[0], _run(folded.path, feed)[0])
    # Different names: y's first axis is not x's, so the target stays computed (here [2, -1] -> [2, 12]).
    kept = fold_shapes(other, tmp_path / "other-folded.onnx")
    assert kept.reshapes == 0 and not kept.changed and kept.path == other
    assert not (tmp_path / "other-folded.onnx").exists()


def test_constant_nodes_of_every_form_and_a_graph_it_cannot_read(tmp_path, monkeypatch):
    """Constant(value_ints=...) takes part like an initializer; a graph the fold fails on is used as it is."""
    nodes = [helper.make_node("Constant", [], ["minus_one"], value_ints=[-1]),
             helper.make_node("Constant", [], ["zero"], value_int=0),
             helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"]),
             helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["out"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [_i64("zero_axes", [0])])
    result = fold_shapes(path, tmp_path / "folded.onnx")
    assert result.reshapes == 1 and _ops(result.path) == {"Reshape": 1}
    feed = {"x": np.arange(30, dtype=np.float32).reshape(5, 2, 3)}
    np.testing.assert_array_equal(_run(result.path, feed)[0], feed["x"].reshape(5, 6))

    def broken(self):
        raise ValueError("unreadable")

    monkeypatch.setattr(shape_fold._Folder, "run", broken)
    failed = fold_shapes(path, tmp_path / "again.onnx")
    assert failed.path == path and not failed.changed and "not folded (ValueError: unreadable)" in failed.notes[0]


def test_shapes_recorded_in_the_file_are_not_trusted(tmp_path):
    """An exporter's traced value_info says [8, 4] for a tensor whose first axis follows the input: not a constant."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"]), helper.make_node("Unsqueeze", ["n", "zero_axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["r", "target"], ["out"])]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [_i64("zero", 0), _i64("zero_axes", [0]), _i64("minus_one", [-1])],
        value_info=[helper.make_tensor_value_info("r", TensorProto.FLOAT, [8, 4])]),
        opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "stale.onnx"
    onnx.save(model, str(path))
    result = fold_shapes(path, tmp_path / "folded.onnx")
    target = next(i for i in onnx.load(str(result.path)).graph.initializer if i.name.endswith("_shape"))
    assert list(numpy_helper.to_array(target)) == [0, -1]  # "copy axis 0", never 8
    assert _run(result.path, {"x": np.ones((3, 4), np.float32)})[0].shape == (3, 4)


def test_broadcast_axis_is_not_taken_from_an_input_that_may_be_one(tmp_path):
    """Add(x [p, 6], z [q, 6]) is q long when p is 1: its axis is not x's, so no "copy" is written."""
    nodes = [helper.make_node("Add", ["x", "z"], ["t"]), helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["p"]), helper.make_node("Unsqueeze", ["p", "zero_axes"], ["p1"]),
             helper.make_node("Concat", ["p1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["t", "target"], ["out"])]
    inits = [_i64("zero", 0), _i64("zero_axes", [0]), _i64("minus_one", [-1])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["p", 6]),
                                   helper.make_tensor_value_info("z", TensorProto.FLOAT, ["q", 6])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    result = fold_shapes(path, tmp_path / "folded.onnx")
    assert result.reshapes == 0
    feed = {"x": np.ones((1, 6), np.float32), "z": np.arange(24, dtype=np.float32).reshape(4, 6)}
    assert _run(result.path, feed)[0].shape == (1, 24)  # [0, -1] would have given (4, 6)


def test_static_sizes_fold_through_arithmetic_and_outputs_stay(tmp_path):
    """sqrt(last axis) of a [n, 16] input is the constant 4; a graph output computed from constants stays an output."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=-1), helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Sqrt", ["f"], ["scale"]), helper.make_node("Div", ["x", "scale"], ["out"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, None),
                  helper.make_tensor_value_info("scale", TensorProto.FLOAT, None)])
    result = fold_shapes(path, tmp_path / "folded.onnx")
    assert result.folded == 3 and _ops(result.path) == {"Div": 1, "Constant": 1}
    feed = {"x": np.full((3, 16), 8.0, np.float32)}
    out, scale = _run(result.path, feed)
    np.testing.assert_array_equal(out, np.full((3, 16), 2.0, np.float32))
    np.testing.assert_array_equal(scale, [4.0])


def test_large_results_stay_computed(tmp_path):
    """A constant too large to be worth storing (ConstantOfShape of a fixed big shape) is left to the runtime."""
    side = int(np.sqrt(MAX_FOLDED_ELEMENTS)) + 8
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["zeros"], value=numpy_helper.from_array(np.array([0.0], np.float32))),
             helper.make_node("Add", ["x", "zeros"], ["out"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [side, side])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    result = fold_shapes(path, tmp_path / "folded.onnx")
    assert result.folded == 1  # the Shape, not the ConstantOfShape
    assert _ops(result.path) == {"ConstantOfShape": 1, "Add": 1}
    assert (tmp_path / "folded.onnx").stat().st_size < 4 * MAX_FOLDED_ELEMENTS


def test_external_data_is_left_alone(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "w"], ["out"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                                                [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                                                [numpy_helper.from_array(np.ones(2, np.float32), "w")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    result = fold_shapes(path, tmp_path / "folded.onnx")
    assert result.path == path and not result.changed and "external data" in result.notes[0]
