"""Graph facts and the --shape edit, on tiny ONNX models built in the test."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit import graph
from edgekit.errors import UsageError
from edgekit.graph import InputSpec


def _model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),)) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8  # readable by every onnxruntime edgekit supports
    return m


def add_model() -> onnx.ModelProto:
    """Z = X + Y, X: float32 [batch, 3], Y: float32 [batch, anonymous]."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", None])
    z = helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["batch", 3])
    return _model([helper.make_node("Add", ["X", "Y"], ["Z"])], [x, y], [z])


def identity_model() -> onnx.ModelProto:
    """ids: int64 [batch, seq] -> out, plus a weight wrongly listed as a graph input (old exporters)."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    w = helper.make_tensor_value_info("W", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, ["batch", "seq"])
    weight = numpy_helper.from_array(np.ones(2, dtype=np.float32), "W")
    return _model([helper.make_node("Identity", ["ids"], ["out"])], [ids, w], [out], initializers=[weight])


def write(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- load / input_specs

def test_load_roundtrip_and_specs(tmp_path):
    path = write(tmp_path, add_model())
    model = graph.load(path)
    specs = graph.input_specs(model)
    assert [s.name for s in specs] == ["X", "Y"]
    assert specs[0].dtype == np.dtype(np.float32)
    assert specs[0].shape == ("batch", 3)
    assert specs[1].shape == ("batch", None)
    assert specs[0].free_dims == [(0, "batch")]
    assert specs[1].free_dims == [(0, "batch"), (1, None)]


def test_input_specs_skips_initializers_and_reads_int64():
    specs = graph.input_specs(identity_model())
    assert [s.name for s in specs] == ["ids"]
    assert specs[0].dtype == np.dtype(np.int64)
    assert specs[0].shape == ("batch", "seq")


def test_input_specs_fixed_and_bool():
    m = _model([helper.make_node("Identity", ["m"], ["o"])],
               [helper.make_tensor_value_info("m", TensorProto.BOOL, [1, 7])],
               [helper.make_tensor_value_info("o", TensorProto.BOOL, [1, 7])])
    (spec,) = graph.input_specs(m)
    assert spec.dtype == np.dtype(np.bool_)
    assert spec.shape == (1, 7)
    assert spec.free_dims == []


def test_format_shape():
    assert graph.format_shape(("batch", 3, None)) == "[batch, 3, ?]"


@pytest.mark.parametrize("content", [b"hello world, not a model", b"\xff" * 64,
                                     np.random.default_rng(0).bytes(256)])
def test_load_garbage_raises_usage_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(UsageError) as info:
        graph.load(path)
    assert str(path) in str(info.value)
    assert "not a readable ONNX model" in str(info.value)
    assert "\n" not in str(info.value)


def test_load_truncated_model_raises_usage_error(tmp_path):
    data = add_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(UsageError, match="not a readable ONNX model"):
        graph.load(path)


def test_load_missing_file_raises_usage_error(tmp_path):
    with pytest.raises(UsageError, match="FileNotFoundError"):
        graph.load(tmp_path / "missing.onnx")


def test_load_empty_file_raises_usage_error(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(UsageError):
        graph.load(path)


# ---------------------------------------------------------------- opset / transformer

def test_opset():
    assert graph.opset(add_model()) == 17
    assert graph.opset(_model([helper.make_node("Identity", ["a"], ["b"])],
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
                              opsets=(("com.microsoft", 1), ("ai.onnx", 13)))) == 13
    assert graph.opset(_model([], [], [], opsets=(("com.microsoft", 1),))) == 0


def _ops_model(ops):
    return _model([helper.make_node(op, ["a"], [f"o{i}"]) for i, op in enumerate(ops)], [], [])


def test_looks_like_transformer():
    assert graph.looks_like_transformer(_ops_model(["MatMul", "Softmax", "Add"]))
    assert not graph.looks_like_transformer(_ops_model(["MatMul", "Softmax", "Conv"]))
    assert not graph.looks_like_transformer(_ops_model(["MatMul", "Add"]))
    assert not graph.looks_like_transformer(_ops_model(["Softmax"]))
    assert not graph.looks_like_transformer(add_model())


# ---------------------------------------------------------------- parse_shape_option

@pytest.mark.parametrize("text, expected", [
    ("pixel_values=1,3,224,224", ("pixel_values", (1, 3, 224, 224))),
    ("x=5", ("x", (5,))),
    ("input_ids =1, 128", ("input_ids", (1, 128))),
])
def test_parse_shape_option_good(text, expected):
    assert graph.parse_shape_option(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("x", "expected NAME=D1,D2"),
    ("x:1,2", "expected NAME=D1,D2"),
    ("=1,2", "expected NAME=D1,D2"),
    ("x=", "expected NAME=D1,D2"),
    ("x=a,b", "positive integers"),
    ("x=1.5,2", "positive integers"),
    ("x=1,,2", "positive integers"),
    ("x=1,0", "positive integers"),
    ("x=1,-3", "positive integers"),
])
def test_parse_shape_option_bad(text, fragment):
    with pytest.raises(UsageError) as info:
        graph.parse_shape_option(text)
    assert fragment in str(info.value)
    assert f"'{text}'" in str(info.value)


# ---------------------------------------------------------------- resolve_shapes / require_static

def test_resolve_shapes_fixes_dims():
    specs = graph.input_specs(add_model())
    resolved = graph.resolve_shapes(specs, {"X": (2, 3), "Y": (2, 3)})
    assert [s.shape for s in resolved] == [(2, 3), (2, 3)]
    assert [s.dtype for s in resolved] == [np.dtype(np.float32)] * 2
    graph.require_static(resolved)  # nothing free: no error
    # untouched inputs keep their shape; inputs are not mutated
    partial = graph.resolve_shapes(specs, {"X": (4, 3)})
    assert partial[1].shape == ("batch", None)
    assert specs[0].shape == ("batch", 3)


def test_resolve_shapes_unknown_input():
    with pytest.raises(UsageError) as info:
        graph.resolve_shapes(graph.input_specs(add_model()), {"Q": (1, 3)})
    assert "no input 'Q'" in str(info.value)
    assert "inputs: X, Y" in str(info.value)


def test_resolve_shapes_wrong_rank():
    with pytest.raises(UsageError) as info:
        graph.resolve_shapes(graph.input_specs(add_model()), {"X": (1, 3, 1)})
    assert "rank 2" in str(info.value)
    assert "got 3 dimensions" in str(info.value)


def test_resolve_shapes_contradicts_fixed_dim():
    with pytest.raises(UsageError) as info:
        graph.resolve_shapes(graph.input_specs(add_model()), {"X": (1, 4)})
    assert "dimension 1 of 'X' is fixed at 3, got 4" in str(info.value)


def test_require_static_names_each_input_and_free_dim():
    specs = graph.input_specs(add_model()) + graph.input_specs(identity_model())
    with pytest.raises(UsageError) as info:
        graph.require_static(specs)
    msg = str(info.value)
    assert "X [batch, 3]: dim 0 (batch)" in msg
    assert "Y [batch, ?]: dim 0 (batch), dim 1 (?)" in msg
    assert "ids [batch, seq]: dim 0 (batch), dim 1 (seq)" in msg
    assert "--shape X=1,3" in msg
    assert "--shape ids=1,N" in msg
    assert "\n" not in msg


def test_require_static_only_names_inputs_with_free_dims():
    specs = [InputSpec("a", np.dtype(np.float32), (1, 3)), InputSpec("b", np.dtype(np.float32), (1, "n"))]
    with pytest.raises(UsageError) as info:
        graph.require_static(specs)
    assert "b [1, n]: dim 1 (n)" in str(info.value)
    assert "a [" not in str(info.value)


# ---------------------------------------------------------------- apply_shapes

def test_apply_shapes_writes_dims_and_runs(tmp_path):
    model = add_model()
    specs = graph.resolve_shapes(graph.input_specs(model), {"X": (2, 3), "Y": (2, 3)})
    fixed = graph.apply_shapes(model, specs)
    assert [s.shape for s in graph.input_specs(fixed)] == [(2, 3), (2, 3)]
    for value in fixed.graph.input:
        assert all(d.HasField("dim_value") and not d.dim_param for d in value.type.tensor_type.shape.dim)
    onnx.checker.check_model(fixed)
    # survives a save / load round trip through edgekit's own loader
    path = write(tmp_path, fixed, "fixed.onnx")
    reloaded = graph.load(path)
    assert [s.shape for s in graph.input_specs(reloaded)] == [(2, 3), (2, 3)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [tuple(i.shape) for i in session.get_inputs()] == [(2, 3), (2, 3)]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = np.full((2, 3), 10, dtype=np.float32)
    (z,) = session.run(None, {"X": x, "Y": y})
    np.testing.assert_array_equal(z, x + y)
    # the fixed shape is enforced
    with pytest.raises(Exception):
        session.run(None, {"X": np.zeros((1, 3), np.float32), "Y": np.zeros((1, 3), np.float32)})


def test_apply_shapes_drops_stale_value_info():
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n"])
    model = _model([helper.make_node("Relu", ["X"], ["H"]), helper.make_node("Neg", ["H"], ["Y"])], [x], [y])
    model.graph.value_info.append(helper.make_tensor_value_info("H", TensorProto.FLOAT, ["n"]))
    fixed = graph.apply_shapes(model, graph.resolve_shapes(graph.input_specs(model), {"X": (5,)}))
    hidden = {v.name: v for v in fixed.graph.value_info}
    # re-inferred from the fixed input, not the stale symbolic one
    assert [(d.dim_value, d.dim_param) for d in hidden["H"].type.tensor_type.shape.dim] == [(5, "")]
    session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"X": np.array([-1, 2, -3, 4, 0], np.float32)})
    np.testing.assert_array_equal(out, [0, -2, 0, -4, 0])


def test_apply_shapes_without_changes_keeps_symbolic_dims():
    model = add_model()
    before = model.SerializeToString()
    out = graph.apply_shapes(model, graph.input_specs(model))
    assert out.SerializeToString() == before


# ---------------------------------------------------------------- side effects of ONNX tooling

def test_quant_pre_process_leaves_no_files_in_cwd(tmp_path, monkeypatch):
    from edgekit.stages.quantize_ort import _pre_process

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1024])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    weight = numpy_helper.from_array(np.ones((1, 1024), np.float32), "W")
    # an op symbolic shape inference cannot type: its first attempt fails and edgekit falls back
    nodes = [helper.make_node("Add", ["X", "W"], ["H"]), helper.make_node("Mystery", ["H"], ["Y"], domain="com.example")]
    model = _model(nodes, [x], [y], initializers=[weight], opsets=(("", 17), ("com.example", 1)))
    work = tmp_path / "work"
    work.mkdir()
    src = write(work, model, "in.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    notes: list[str] = []
    _pre_process(src, work / "pre.onnx", False, notes)
    assert any("symbolic shape inference failed" in n for n in notes)  # the fallback path was taken
    assert sorted(p.name for p in cwd.iterdir()) == []
