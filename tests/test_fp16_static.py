"""Static shapes (intel-npu), FP16 conversion (cuda, intel-gpu), opset/IR caps, precision rules, and their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit.cli import main
from edgekit.config import load_profile, load_target, resolve_precision
from edgekit.data import build_samples
from edgekit.errors import UsageError
from edgekit.graph import InputSpec
from edgekit.stages import static_shapes
from edgekit.stages.caps import check_caps
from edgekit.stages.fp16 import convert_fp16, float_initializer_types
from edgekit.stages.openvino_device import ir_element_types


def run(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


def text_specs() -> list[InputSpec]:
    return [InputSpec("input_ids", np.dtype("int64"), ("batch_size", "sequence_length")),
            InputSpec("attention_mask", np.dtype("int64"), ("batch_size", "sequence_length"))]


# ---------------------------------------------------------------- static shapes: resolution


def test_static_text_defaults_batch_one_and_profile_sequence_length():
    fixed = static_shapes.resolve(text_specs(), "intel-npu", "huggingface", "text", {}, 64)
    assert fixed.shapes == {"input_ids": [1, 64], "attention_mask": [1, 64]}
    assert fixed.origins["input_ids"] == ["batch 1 (default)", "sequence length 64 (profile)"]
    assert fixed.to_dict()["attention_mask"]["shape"] == [1, 64]


def test_static_sequence_length_capped_by_max_positions():
    fixed = static_shapes.resolve(text_specs(), "intel-npu", "huggingface", "text", {"max_position_embeddings": 32}, 128)
    assert fixed.shapes["input_ids"] == [1, 32]
    assert "max_position_embeddings 32" in fixed.origins["input_ids"][1]


def test_static_image_defaults_from_config():
    spec = InputSpec("pixel_values", np.dtype("float32"), ("batch_size", "num_channels", "height", "width"))
    fixed = static_shapes.resolve([spec], "intel-npu", "huggingface", "image", {"image_size": 32, "num_channels": 3}, 128)
    assert fixed.shapes == {"pixel_values": [1, 3, 32, 32]}
    assert fixed.origins["pixel_values"][2] == "image_size 32 (config)"


def test_static_given_shape_and_fixed_dims_are_kept():
    specs = [InputSpec("input_ids", np.dtype("int64"), (2, 16))]
    fixed = static_shapes.resolve(specs, "intel-npu", "huggingface", "text", {}, 128, frozenset({"input_ids"}))
    assert fixed.shapes == {"input_ids": [2, 16]} and fixed.origins["input_ids"] == ["--shape", "--shape"]


def test_static_dim_without_default_is_a_usage_error_naming_input_and_dim():
    spec = InputSpec("input_features", np.dtype("float32"), ("batch_size", 80, "frames"))
    with pytest.raises(UsageError) as err:
        static_shapes.resolve([spec], "intel-npu", "huggingface", "text", {}, 128)
    message = str(err.value)
    assert "target intel-npu needs static shapes" in message
    assert "input 'input_features'" in message and "dim 2 (frames)" in message
    assert "--shape input_features=1,80,N" in message


def test_static_onnx_file_gets_no_defaults():
    spec = InputSpec("input", np.dtype("float32"), ("batch", 3, "height", "width"))
    with pytest.raises(UsageError, match="dim 0 \\(batch\\)"):
        static_shapes.resolve([spec], "intel-npu", "onnx", "image", {}, 128)


def test_static_text_samples_are_padded(bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bert_dir))
    specs = text_specs() + [InputSpec("token_type_ids", np.dtype("int64"), ("batch_size", "sequence_length"))]
    fixed = static_shapes.resolve(specs, "intel-npu", "huggingface", "text", {}, 256)
    samples = build_samples(fixed.specs, "text", None, 8, 8, 0, 256, tokenizer=tokenizer)
    for feed in samples.calibration + samples.evaluation + [samples.benchmark]:
        assert {k: v.shape for k, v in feed.items()} == {"input_ids": (1, 256), "attention_mask": (1, 256), "token_type_ids": (1, 256)}
    # Paragraphs shorter than 256 tokens are padded, and the mask hides the padding.
    padded = [feed for feed in samples.evaluation + samples.calibration if feed["attention_mask"][0, -1] == 0]
    assert padded
    for feed in padded:
        assert (feed["input_ids"][0][feed["attention_mask"][0] == 0] == tokenizer.pad_token_id).all()


# ---------------------------------------------------------------- FP16 conversion


def test_fp16_conversion_weights_fp16_io_fp32_runs_on_ort_cpu(cnn_onnx, tmp_path):
    fixed = tmp_path / "fixed.onnx"
    static_shapes.write_static_onnx(cnn_onnx, fixed, static_shapes.StaticShapes(
        [InputSpec("input", np.dtype("float32"), (1, 3, 32, 32))]))
    result = convert_fp16(fixed, tmp_path / "fp16.onnx")
    model = onnx.load(str(result.path))
    types = float_initializer_types(model)
    assert types["FLOAT16"] > 0 and types.get("FLOAT", 0) == 0  # every weight of this CNN is FP16
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT]
    assert result.settings["inputs_outputs"] == "fp32 (keep_io_types)"
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.dtype == np.float32 and got.shape == want.shape
    cosine = float(np.dot(got.ravel(), want.ravel()) / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.999


def test_fp16_keeps_sensitive_ops_fp32(tmp_path):
    """A LayerNormalization -> Softmax graph: both stay FP32 (casts around them), the MatMul weight is FP16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "bias")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("LayerNormalization", ["h", "scale", "bias"], ["n"], name="ln", axis=-1),
             helper.make_node("Softmax", ["n"], ["y"], name="sm", axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [w, scale, bias])
    src = tmp_path / "ln.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    result = convert_fp16(src, tmp_path / "ln16.onnx")
    model = onnx.load(str(result.path))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert inits["w"] == TensorProto.FLOAT16
    assert "LayerNormalization×1" in result.settings["kept_fp32"] and "Softmax×1" in result.settings["kept_fp32"]
    x = rng.standard_normal((2, 8)).astype(np.float32)
    y = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.allclose(y.sum(axis=-1), 1.0, atol=1e-3)


# ---------------------------------------------------------------- caps


def capped_target(tmp_path: Path, **caps) -> str:
    path = tmp_path / "capped.toml"
    path.write_text('runtime = "onnxruntime"\ndevice = "GPU"\nexecution_provider = "CUDAExecutionProvider"\n'
                    'precision = "fp16"\n' + "".join(f"{k} = {v}\n" for k, v in caps.items()))
    return str(path)


def test_caps_unit(cnn_onnx, tmp_path):
    check_caps(cnn_onnx, [load_target(capped_target(tmp_path, max_opset=13, max_ir_version=10))])
    with pytest.raises(UsageError, match="accepts ONNX opset 12 at most; x.onnx has opset 13"):
        check_caps(cnn_onnx, [load_target(capped_target(tmp_path, max_opset=12))], "x.onnx")
    ir = onnx.load(str(cnn_onnx), load_external_data=False).ir_version
    with pytest.raises(UsageError, match=f"IR version {ir - 1} at most"):
        check_caps(cnn_onnx, [load_target(capped_target(tmp_path, max_ir_version=ir - 1))])


def test_opset_above_cap_exits_2_before_anything_is_built(cnn_onnx, tmp_path, quick_profile):
    out = tmp_path / "out"
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "--target", capped_target(tmp_path, max_opset=11),
                 "--profile", str(quick_profile), "-o", str(out))
    assert_usage_error(result, "target capped accepts ONNX opset 11 at most", "opset 13")
    assert not out.exists()


def test_ir_version_above_cap_exits_2(cnn_onnx, tmp_path, quick_profile):
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "--target", capped_target(tmp_path, max_ir_version=3),
                 "--profile", str(quick_profile), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "IR version 3 at most")


def test_builtin_cuda_caps():
    cuda = load_target("cuda")
    assert (cuda.max_opset, cuda.max_ir_version) == (21, 10)


# ---------------------------------------------------------------- precision rules and bad inputs


def test_precision_rules(tmp_path):
    balanced, accurate = load_profile("balanced"), load_profile("accurate")
    assert resolve_precision(load_target("cpu"), balanced) == "int8"
    assert resolve_precision(load_target("cpu"), accurate) == "fp32"
    assert resolve_precision(load_target("intel-npu"), balanced) == "int8"
    assert resolve_precision(load_target("intel-npu"), accurate) == "fp16"
    assert resolve_precision(load_target("cuda"), balanced) == "fp16"
    asks_int8 = tmp_path / "int8dev.toml"
    asks_int8.write_text('precision = "int8"\ndevice_precision = "int8"\n[budgets]\nmin_cosine = 0.9\n')
    with pytest.raises(UsageError, match="target cuda does not support"):
        resolve_precision(load_target("cuda"), load_profile(str(asks_int8)))
    assert resolve_precision(load_target("intel-gpu"), load_profile(str(asks_int8))) == "int8"


def test_profile_precision_the_target_cannot_build_exits_2(cnn_onnx, tmp_path):
    profile = tmp_path / "int8dev.toml"
    profile.write_text('precision = "int8"\ndevice_precision = "int8"\n[budgets]\nmin_cosine = 0.9\n')
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "--target", "cuda", "--profile", str(profile),
                 "-o", str(tmp_path / "out"))
    assert_usage_error(result, "asks device_precision 'int8'", "target cuda does not support", "fp16, fp32")


def test_npu_with_free_dims_exits_2_naming_input_and_dim(cnn_onnx, tmp_path, quick_profile):
    result = run(str(cnn_onnx), "--target", "intel-npu", "--profile", str(quick_profile), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "input", "dim 2 (height)", "--shape")


@pytest.mark.parametrize("text, fragment", [
    ('precision = "fp8"\n', "'precision' must be one of fp16, int8, fp32"),
    ('precision = "fp16"\nprecisions = ["int8"]\n', "'precision' = 'fp16' is not one of its 'precisions'"),
    ('precisions = ["fp16"]\n', "'precisions' needs 'precision'"),
    ('precision = "fp16"\nprecisions = ["fp16", "fp16"]\n', "distinct precisions"),
    ('precision = "fp16"\nprecisions = "fp16"\n', "'precisions' must be list"),
    ("static_shapes = 1\n", "'static_shapes' must be bool"),
    ("max_opset = 0\n", "'max_opset' = 0 is out of range"),
    ('verify_device = "GPU"\n', "'verify_device' must be one of CPU"),
    ("precompiled_blob = true\n", "'precompiled_blob' is for OpenVINO targets only"),
    ("max_opsett = 13\n", "did you mean 'max_opset'"),
])
def test_new_target_keys_are_validated(tmp_path, text, fragment):
    path = tmp_path / "t.toml"
    path.write_text('runtime = "onnxruntime"\ndevice = "GPU"\n' + text)
    with pytest.raises(UsageError) as err:
        load_target(str(path))
    assert fragment in str(err.value)


def test_device_precision_profile_key_is_validated(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('precision = "int8"\ndevice_precision = "int4"\n[budgets]\nmin_cosine = 0.9\n')
    with pytest.raises(UsageError, match="'device_precision' must be one of fp16, int8, fp32"):
        load_profile(str(path))


# ---------------------------------------------------------------- intel-npu end to end on the tiny BERT


def test_intel_npu_static_ir_int8_weights_text_padded(bert_dir, quick_profile, tmp_path):
    import openvino as ov

    out = tmp_path / "npu"
    result = run(str(bert_dir), "--target", "intel-npu", "--profile", str(quick_profile), "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (npu,) = report["targets"]
    assert npu["precision"] == "int8" and npu["verdict"] == "pass"
    assert npu["static_shapes"]["input_ids"] == {"shape": [1, 32], "from": ["batch 1 (default)", "sequence length 32 (profile)"]}
    model = ov.Core().read_model(str(out / "intel-npu/model.xml"))
    assert not model.is_dynamic()
    assert all(p.get_partial_shape().is_static for p in list(model.inputs) + list(model.outputs))
    assert [list(p.get_partial_shape().to_shape()) for p in model.inputs] == [[1, 32]] * 3
    types = ir_element_types(out / "intel-npu/model.xml")
    assert types["i8"] > 0.9 * sum(v for k, v in types.items() if k.startswith("f") or k == "i8")
    assert types.get("f32", 0) < types["i8"] / 10
    assert "INT8_SYM" in npu["quantization"]["weights"]
    # Static shapes are in the report a reviewer reads.
    assert "## Static shapes" in (out / "report.md").read_text()
