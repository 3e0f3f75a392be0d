"""Outlier channels: quantise a MatMul whose input is long-tailed by keeping only its outlier channels FP32.

A transformer's feed-forward down projection reads a GELU output. On all-MiniLM-L6-v2 a handful of its
1536 input channels carry values up to 25 while the median channel peaks near 1.8; one per-tensor UINT8
range for all of them rounds the ordinary channels away (cosine_min 0.89 with all six quantised). Here
each such `MatMul(x, W)` becomes

    MatMul(x * mask, W)            INT8: the outlier channels zeroed, so calibration sees a short range
  + MatMul(Gather(x, idx), W[idx]) FP32: the few outlier channels (idx), exactly

Rules:
1. The outlier channels are found on the calibration samples (the FP32 graph's own activations): a
   channel whose largest |x| exceeds `RATIO` times the median channel's, at most `MAX_SHARE` of them (the
   largest first).
2. Only MatMuls with a constant 2-D weight and a last-axis input are split; a MatMul with no outlier
   channel is left as it is (quantised whole).
3. The rewrite is exact in FP32 (x*mask@W + x[idx]@W[idx] = x@W); only quantisation differs. Where a
   bias Add follows the MatMul, the FP32 part is added after the bias, so the INT8 MatMul and its bias
   stay neighbours (ONNX Runtime's artifact folds them: stages/ort_int8.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..runtimes import Feed

RATIO = 2.5
MAX_SHARE = 0.125


@dataclass
class Split:
    """What `split_outlier_channels` did: the MatMuls it split and, for each, the FP32 part's node."""

    split: dict[str, list[int]] = field(default_factory=dict)  # MatMul name -> outlier channels
    fp32_nodes: list[str] = field(default_factory=list)  # the Gather and MatMul of every FP32 part
    unsplit: list[str] = field(default_factory=list)  # candidates that could not be split (kept FP32 by the caller)

    def describe(self) -> str:
        if not self.split:
            return "none"
        counts = [len(c) for c in self.split.values()]
        return (f"{len(self.split)} MatMuls fed by GELU quantised with their outlier input channels FP32 "
                f"({min(counts)}-{max(counts)} channels each, over {RATIO:g}x the median channel's range)")


def _activations(model: onnx.ModelProto, tensors: list[str], feeds: Sequence[Feed]) -> dict[str, np.ndarray]:
    """Per tensor, the largest |value| of each last-axis channel over `feeds` (the FP32 graph, ONNX Runtime)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the tensors by their names
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    peaks: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = session.run(tensors, {k: v for k, v in feed.items() if k in inputs})
        for name, value in zip(tensors, values):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
    return peaks


def outlier_channels(peaks: np.ndarray) -> list[int]:
    """Rule 1: channels whose peak exceeds RATIO x the median channel's peak, at most MAX_SHARE of them."""
    median = float(np.median(peaks))
    if not np.isfinite(median) or median <= 0:
        return []
    over = np.where(peaks > RATIO * median)[0]
    cap = max(1, int(MAX_SHARE * peaks.size))
    largest = over[np.argsort(-peaks[over], kind="stable")][:cap]
    return sorted(int(c) for c in largest)


def _bias_add(model: onnx.ModelProto, tensor: str, initializers: dict) -> onnx.NodeProto | None:
    """The single consumer of `tensor` when it is an Add of a constant 1-D bias, else None."""
    users = [n for n in model.graph.node if tensor in n.input]
    if len(users) != 1 or users[0].op_type != "Add" or tensor in {o.name for o in model.graph.output}:
        return None
    other = [i for i in users[0].input if i != tensor]
    bias = initializers.get(other[0]) if len(other) == 1 else None
    return users[0] if bias is not None and len(bias.dims) == 1 else None


def split_outlier_channels(src: Path, dst: Path, names: Sequence[str], calibration: Sequence[Feed]) -> tuple[Path, Split]:
    """Rewrite the MatMuls named in `names` (rules 2, 3) into `dst`; `src` is returned when none was split."""
    result = Split()
    model = onnx.load(str(src), load_external_data=False)
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer) or model.ByteSize() > 1_500_000_000:
        result.unsplit = list(names)  # a graph this large is not rewritten in memory: those MatMuls stay FP32
        return src, result
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.name}
    candidates = []
    for name in names:
        node = nodes.get(name)
        weight = initializers.get(node.input[1]) if node is not None and node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            result.unsplit.append(name)
        else:
            candidates.append(node)
    if not candidates:
        return src, result
    peaks = _activations(model, sorted({n.input[0] for n in candidates}), calibration)
    for node in candidates:
        weight = numpy_helper.to_array(initializers[node.input[1]])
        channels = outlier_channels(peaks[node.input[0]]) if peaks[node.input[0]].size == weight.shape[0] else []
        if not channels:
            continue
        result.fp32_nodes += _split_one(model, node, weight, channels, initializers)
        result.split[node.name] = channels
    if not result.split:
        return src, result
    onnx.save(model, str(dst))
    return dst, result


def _split_one(model: onnx.ModelProto, node: onnx.NodeProto, weight: np.ndarray, channels: list[int],
               initializers: dict) -> list[str]:
    """Rewrite one MatMul: its `channels` go through an FP32 Gather+MatMul, the rest through it, masked
    (rule 3). Returns the FP32 part's node names."""
    prefix = f"{node.name}/outliers"
    mask = np.ones(weight.shape[0], dtype=weight.dtype)
    mask[channels] = 0
    model.graph.initializer.extend([
        numpy_helper.from_array(mask, f"{prefix}/mask"),
        numpy_helper.from_array(np.asarray(channels, dtype=np.int64), f"{prefix}/channels"),
        numpy_helper.from_array(np.ascontiguousarray(weight[channels]), f"{prefix}/weight"),
    ])
    x, y = node.input[0], node.output[0]
    gather = helper.make_node("Gather", [x, f"{prefix}/channels"], [f"{prefix}/x"], axis=-1, name=f"{prefix}/Gather")
    fp32 = helper.make_node("MatMul", [f"{prefix}/x", f"{prefix}/weight"], [f"{prefix}/y"], name=f"{prefix}/MatMul")
    masked = helper.make_node("Mul", [x, f"{prefix}/mask"], [f"{prefix}/x_rest"], name=f"{prefix}/Mul")
    node.input[0], node.output[0] = f"{prefix}/x_rest", f"{node.name}/rest"
    bias_add = _bias_add(model, y, initializers)
    if bias_add is not None:  # rest + bias first, then the FP32 part: the INT8 MatMul keeps its bias next to it
        after, total_out = bias_add, bias_add.output[0]
        bias_add.input[list(bias_add.input).index(y)] = f"{node.name}/rest"
        bias_add.output[0] = f"{node.name}/rest_biased"
        total = helper.make_node("Add", [f"{node.name}/rest_biased", f"{prefix}/y"], [total_out], name=f"{prefix}/Add")
    else:
        after = node
        total = helper.make_node("Add", [f"{node.name}/rest", f"{prefix}/y"], [y], name=f"{prefix}/Add")
    at = list(model.graph.node).index(node)
    for offset, new in enumerate((gather, fp32, masked)):
        model.graph.node.insert(at + offset, new)
    model.graph.node.insert(list(model.graph.node).index(after) + 1, total)
    # Typed, so the quantiser knows them even where shape inference stops (it skips what it cannot type).
    model.graph.value_info.extend(helper.make_tensor_value_info(name, initializers[node.input[1]].data_type, None)
                                  for name in (f"{prefix}/x", f"{prefix}/y", f"{prefix}/x_rest", f"{node.name}/rest")
                                  + ((f"{node.name}/rest_biased",) if bias_add is not None else ()))
    return [gather.name, fp32.name]
