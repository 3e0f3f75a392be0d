"""Quantise for ONNX Runtime: static INT8 QDQ with calibration data.

1. Graphs below opset 13 are converted to 13 first (per-channel QDQ needs it); when conversion fails,
   quantisation falls back to per-tensor and says so.
2. `quant_pre_process` (shape inference) runs first; when its symbolic shape inference fails, as it
   does on many published graphs, it is retried without it, then skipped — each fallback is noted.
   Then the graph's shape arithmetic is folded into constants where its sizes are fixed
   (stages/shape_fold.py).
3. Weights are symmetric INT8 per channel; activations UINT8 (asymmetric or symmetric, per profile),
   the fast u8s8 path on x86, with moving-average min/max calibration (one outlier sample does not
   stretch a range). Transformers quantise the MatMuls that hold weights and the embedding Gathers;
   MatMuls of two activations stay FP32, and MatMuls fed by a GELU (long-tailed inputs) stay FP32 or,
   with the profile's `split_outliers`, are quantised with their outlier input channels FP32
   (stages/outliers.py). Other graphs quantise every operator ONNX Runtime supports.
4. Histogram calibration (percentile, entropy) needs equal-length samples; with variable-length text
   it falls back to min/max and says so.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import onnx

from .. import graph
from ..config import Profile
from ..errors import InternalError
from ..runtimes import Feed
from .outliers import Split, split_outlier_channels
from .shape_fold import fold_shapes

log = logging.getLogger(__name__)

# Measured on all-MiniLM-L6-v2 (64 calibration paragraphs, 32 evaluation paragraphs, cosine_min of
# token embeddings): quantising the embedding Gathers costs no accuracy and cuts the artifact from
# 59 MB to 23 MB; the feed-forward down projections (fed by GELU) quantised whole drop cosine_min to
# 0.87, kept FP32 it is 0.985, quantised with their outlier channels FP32 and no output requantisation
# 0.986 (and 16% faster), with the residual adds reading the layer norms' outputs unrounded 0.993;
# keeping the activation x activation MatMuls (attention scores and context) FP32 and moving-average
# calibration each raise it a little more.
TRANSFORMER_OPS = ["MatMul", "Gemm", "Gather"]


@dataclass
class QuantizeResult:
    path: Path
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[Feed], input_names: set[str], on_sample: Callable[[int], None] | None = None):
        self._feeds = [{k: v for k, v in f.items() if k in input_names} for f in feeds]
        self._index, self._on_sample = 0, on_sample or (lambda k: None)

    def get_next(self):
        if self._index >= len(self._feeds):
            return None
        self._index += 1
        self._on_sample(self._index)  # progress: calibration sample k of n
        return self._feeds[self._index - 1]

    def rewind(self):
        self._index = 0


def _upgrade_opset(src: Path, dst: Path, notes: list[str]) -> tuple[Path, bool]:
    model = onnx.load(str(src))
    version = graph.opset(model)
    if version >= 13:
        return src, True
    try:
        converted = onnx.version_converter.convert_version(model, 13)
        onnx.checker.check_model(converted)
        onnx.save(converted, str(dst))
        notes.append(f"opset {version} converted to 13 for per-channel quantisation")
        return dst, True
    except Exception as exc:
        notes.append(f"opset {version} could not be converted to 13 ({type(exc).__name__}); quantised per-tensor")
        return src, False


def _pre_process(src: Path, dst: Path, fused: bool, notes: list[str]) -> Path:
    from onnxruntime.quantization import quant_pre_process

    attempts = [
        ("full", dict(skip_symbolic_shape=False)),
        ("without symbolic shape inference", dict(skip_symbolic_shape=True)),
    ]
    for label, kwargs in attempts:
        try:
            # Its symbolic shape inference writes temporary files into the current directory.
            with contextlib.chdir(dst.parent):
                quant_pre_process(str(src), str(dst), skip_optimization=fused, **kwargs)
            if label != "full":
                notes.append(f"quant_pre_process ran {label} (symbolic shape inference failed on this graph)")
            return dst
        except Exception as exc:
            log.info("quant_pre_process (%s) failed: %s", label, exc)
    notes.append("quant_pre_process failed on this graph and was skipped")
    return src


def activation_only_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes to keep FP32 in a transformer: MatMuls of two activations (attention scores and context)
    and Gathers that index an activation (a pooler picking a token), not an embedding table."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if (n.op_type == "MatMul" and not any(i in constants for i in n.input))
            or (n.op_type == "Gather" and n.input[0] not in constants)]


GELU_OPS = {"Gelu", "BiasGelu", "FastGelu", "Erf", "Tanh"}


ELEMENTWISE = {"Mul", "Add", "Div", "Sub", "Pow", "Sqrt", "Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def gelu_fed_matmuls(model: onnx.ModelProto, hops: int = 4) -> list[str]:
    """MatMuls whose activation comes from a GELU: a fused GELU op, or an Erf/Tanh reached through at
    most `hops` elementwise ops (the exported x*0.5*(1+erf(x/sqrt2)) form) — a transformer's
    feed-forward down projection. GELU outputs are long-tailed; per-tensor UINT8 ranges lose them."""
    producer = graph.producers(model)

    def near_gelu(tensor: str, depth: int) -> bool:
        node = producer.get(tensor)
        if node is None or depth == 0:
            return False
        if node.op_type in GELU_OPS:
            return True
        return node.op_type in ELEMENTWISE and any(near_gelu(i, depth - 1) for i in node.input)

    # With static shapes, ONNX Runtime's pre-processing turns MatMul+Add into Reshape->Gemm->Reshape.
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and near_gelu(n.input[0], hops + 1)]


PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Reshape", "Transpose", "Squeeze",
                "Unsqueeze", "Flatten", "MaxPool", "AveragePool", "Resize", "Split", "Slice"}


def _with_feeding_activations(model: onnx.ModelProto, keep: Sequence[str]) -> list[str]:
    """`keep` plus the weightless producers (ReLU, reshapes, pooling) whose every consumer is kept FP32:
    otherwise their quantised output would still round the kept layer's input."""
    kept = set(keep)
    producer, consumers = graph.producers(model), graph.consumers(model)
    frontier = [n for n in model.graph.node if n.name in kept]
    while frontier:
        node = frontier.pop()
        for name in node.input:
            source = producer.get(name)
            if (source is not None and source.name not in kept and source.op_type in PASS_THROUGH
                    and all(c.name in kept for c in consumers.get(source.output[0], []))):
                kept.add(source.name)
                frontier.append(source)
    return list(keep) + sorted(kept - set(keep))


def _read_unrounded(path: Path, choose) -> int:
    """For each activation QuantizeLinear->DequantizeLinear pair, the consumers `choose(q, dq, users, producer,
    consumers)` returns read the tensor before the pair instead; pairs nothing reads any more are removed.
    Returns how many inputs changed (the file is rewritten only when some did)."""
    model = onnx.load(str(path), load_external_data=False)
    producer, consumers = graph.producers(model), graph.consumers(model)
    changed = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        for user in choose(q, dq, consumers.get(dq.output[0], []), producer, consumers):
            for i, name in enumerate(user.input):
                if name == dq.output[0]:
                    user.input[i] = q.input[0]
                    changed += 1
    if changed:
        graph.remove_unread(model, ("DequantizeLinear", "QuantizeLinear"))
        onnx.save(model, str(path))
    return changed


def strip_rounding_before(path: Path, kept: set[str]) -> int:
    """Remove activation QuantizeLinear->DequantizeLinear pairs whose every consumer is kept FP32
    (the quantiser still rounds a tensor when its producer is quantised). Returns how many inputs changed."""
    model_outputs = {o.name for o in onnx.load(str(path), load_external_data=False).graph.output}

    def choose(q, dq, users, producer, consumers):
        whole = (users and dq.output[0] not in model_outputs and all(u.name in kept for u in users)
                 and len(consumers.get(q.output[0], [])) == 1)
        return users if whole else []

    return _read_unrounded(path, choose)


def fp32_consumers_read_fp32(path: Path, quantised_types: set[str]) -> int:
    """Let the FP32 consumers of a quantised activation read it unrounded; returns how many inputs changed.

    The quantiser inserts one QuantizeLinear->DequantizeLinear pair per tensor, so every consumer of a
    tensor that feeds a quantised MatMul reads its rounded copy: in a transformer, the residual `Add` of each
    layer norm's output. On all-MiniLM-L6-v2 the worst cosine rises from 0.9909 to 0.9939 when those read
    the FP32 tensor, at the same speed. A tensor produced by a quantised operator (one of
    `quantised_types` with a DequantizeLinear input: the embedding Gathers) keeps its pair: reading it in
    FP32 would make ONNX Runtime dequantise the whole table.
    """

    def choose(q, dq, users, producer, consumers):
        source = producer.get(q.input[0])
        if source is not None and source.op_type in quantised_types and any(
                producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in source.input):
            return []
        return [u for u in users if u.op_type not in quantised_types]

    return _read_unrounded(path, choose)


def quantize_onnxruntime(src: Path, workdir: Path, dst: Path, calibration: list[Feed], profile: Profile,
                         transformer: bool, fused: bool, keep_fp32: Sequence[str] = (), on_sample=None) -> QuantizeResult:
    """Quantise `src` into `dst`; nodes named in `keep_fp32` stay FP32 (accuracy recovery uses this)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    notes: list[str] = []
    upgraded, per_channel_ok = _upgrade_opset(src, workdir / "opset13.onnx", notes)
    prepared = _pre_process(upgraded, workdir / "preprocessed.onnx", fused, notes)
    folded = fold_shapes(prepared, workdir / "folded.onnx")
    prepared = folded.path
    notes += folded.notes
    per_channel = profile.per_channel and per_channel_ok
    calibration_method = profile.calibration_method
    shapes = {tuple(v.shape for v in f.values()) for f in calibration}
    if calibration_method != "minmax" and len(shapes) > 1:
        notes.append(f"{calibration_method} calibration needs equal-shape samples; these vary in length, so min/max was used")
        calibration_method = "minmax"
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration_method]
    prepared_model = onnx.load(str(prepared), load_external_data=False)
    input_names = {i.name for i in prepared_model.graph.input}
    gelu_fed = gelu_fed_matmuls(prepared_model) if transformer else []
    split = Split()
    if gelu_fed and profile.split_outliers:
        prepared, split = split_outlier_channels(prepared, workdir / "outliers.onnx",
                                                 [n for n in gelu_fed if n not in keep_fp32], calibration)
        prepared_model = onnx.load(str(prepared), load_external_data=False)
    excluded = (activation_only_nodes(prepared_model) + [n for n in gelu_fed if n not in split.split] + split.fp32_nodes
                if transformer else [])
    kept = _with_feeding_activations(prepared_model, keep_fp32)
    excluded += [name for name in kept if name not in excluded]
    settings = {
        "format": "QDQ",
        "weights": "int8, symmetric, " + ("per-channel" if per_channel else "per-tensor"),
        "activations": f"uint8, {profile.activations}",
        "calibration": f"{calibration_method}{' (moving average)' if calibration_method == 'minmax' else ''}, {len(calibration)} samples",
        "operators": ", ".join(TRANSFORMER_OPS) if transformer else "all supported",
        "kept_fp32": (f"{len(excluded)} nodes: MatMuls of two activations, activation Gathers, "
                      + ("the outlier channels of MatMuls fed by GELU" if split.split else "MatMuls fed by GELU")
                      if excluded else "none"),
    }
    if folded.changed:
        settings["shape_arithmetic"] = folded.describe()
    if split.split:
        settings["outlier_channels"] = split.describe()
    def run(quantize_bias: bool) -> None:
        quantize_static(
            str(prepared),
            str(dst),
            _Reader(calibration, input_names, on_sample),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            op_types_to_quantize=TRANSFORMER_OPS if transformer else None,
            nodes_to_exclude=excluded,
            extra_options={
                "ActivationSymmetric": profile.activations == "symmetric",
                "WeightSymmetric": True,
                "CalibTensorRangeSymmetric": profile.activations == "symmetric",
                "CalibMovingAverage": True,
                "QuantizeBias": quantize_bias,
                # A weight MatMul's output stays FP32 (ONNX Runtime runs DQ->MatMul as MatMulIntegerToFloat):
                # requantising it to UINT8 rounds the feed-forward outputs, whose range is the widest.
                **({"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]} if transformer else {}),
            },
        )

    try:
        try:
            run(quantize_bias=True)
        except Exception as exc:
            # A bias initializer shared between nodes (exporters deduplicate equal tensors) cannot be
            # given one int32 scale; keeping biases FP32 is the faithful way round it.
            if "bias" not in str(exc):
                raise
            notes.append(f"biases kept FP32: {str(exc).splitlines()[0]}")
            settings["biases"] = "fp32"
            run(quantize_bias=False)
    except Exception as exc:
        raise InternalError(f"ONNX Runtime quantisation failed: {str(exc).splitlines()[0]}") from exc
    if keep_fp32:
        strip_rounding_before(dst, set(kept))
    if transformer:
        unrounded = fp32_consumers_read_fp32(dst, set(TRANSFORMER_OPS))
        if unrounded:
            settings["fp32_consumers"] = f"{unrounded} FP32 inputs read unrounded (residual adds of quantised tensors)"
    if split.split:
        quantised = {n.name for n in _dq_fed(onnx.load(str(dst), load_external_data=False))}
        missed = [name for name in split.split if name not in quantised]
        if missed:  # the quantiser skips a tensor it cannot type: say so, never claim INT8 that is not
            notes.append(f"{len(missed)} of {len(split.split)} split MatMuls fed by GELU were left FP32 by the quantiser")
            settings["outlier_channels"] += f"; {len(missed)} left FP32 by the quantiser"
    return QuantizeResult(dst, notes, settings)


def _dq_fed(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes whose first input is a DequantizeLinear output: the quantised ones."""
    producer = graph.producers(model)
    return [n for n in model.graph.node if n.input and producer.get(n.input[0]) is not None
            and producer[n.input[0]].op_type == "DequantizeLinear"]
