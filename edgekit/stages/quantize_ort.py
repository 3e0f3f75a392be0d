"""Quantise for ONNX Runtime: static INT8 QDQ with calibration data, as a list of steps (`qdq_steps`).

The recipe: upgrade opset → pre-process → fold shapes → split outliers → quantise QDQ → strip rounding →
FP32 consumers read FP32 (transformers). Rules:
1. upgrade opset: graphs below opset 13 are converted to 13 (per-channel QDQ needs it); when conversion
   fails, quantisation falls back to per-tensor and says so.
2. pre-process: `quant_pre_process` (shape inference); when its symbolic shape inference fails, as it
   does on many published graphs, it is retried without it, then skipped — each fallback is noted.
   Then fold shapes: the graph's shape arithmetic is folded into constants where its sizes are fixed
   (stages/shape_fold.py).
3. quantise QDQ: weights are symmetric INT8 per channel; activations UINT8 (asymmetric or symmetric, per
   profile), the fast u8s8 path on x86, with moving-average min/max calibration (one outlier sample does
   not stretch a range). Transformers quantise the MatMuls that hold weights and the embedding Gathers;
   MatMuls of two activations stay FP32. Other graphs quantise every operator ONNX Runtime supports.
4. split outliers: a transformer's MatMuls fed by a GELU (long-tailed inputs) stay FP32 or, with the
   profile's `split_outliers`, are quantised with their outlier input channels FP32 (stages/outliers.py).
5. Nodes named in `keep_fp32` (accuracy recovery) stay FP32, with the weightless producers that feed only them.
6. Histogram calibration (percentile, entropy) needs equal-length samples; with variable-length text
   it falls back to min/max and says so.
7. strip rounding: the inputs of the nodes of rules 5 and 9 are read unrounded (nothing to do without them).
8. FP32 consumers read FP32: a transformer's FP32 consumers of a quantised activation read it unrounded.
9. A graph output's final activation (sigmoid, softmax, tanh: its range is its own) is never quantised and
   reads its input unrounded: quantised with a range from calibration samples that rarely reach it (a text
   detector calibrated on images with little text), it caps the output (a probability map that never
   passes 0.53). It stays FP32, and the report says so (`output_activations`).
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
from .base import BuildInputs, Step, StepInput, StepResult, run_recipe, step
from .outliers import Split, split_outlier_channels
from .shape_fold import fold_shapes_step

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


@dataclass
class QdqPlan:
    """What the INT8 steps learn on the way to the quantiser (step rule 5)."""

    per_channel_ok: bool = True  # rule 1: the graph is at opset 13 or above
    gelu_fed: list[str] = field(default_factory=list)  # rule 4
    output_activations: list[str] = field(default_factory=list)  # rule 9
    split: Split = field(default_factory=Split)  # rule 4
    kept: list[str] = field(default_factory=list)  # rule 5: the recovery's FP32 nodes and what feeds only them


@step("upgrade opset")
def upgrade_opset(inp: StepInput) -> StepResult:
    """Rule 1."""
    notes: list[str] = []
    path, per_channel_ok = _upgrade_opset(inp.path, inp.work / "opset13.onnx", notes)
    inp.state.get(QdqPlan).per_channel_ok = per_channel_ok
    return StepResult(path, notes=notes)


@step("pre-process")
def pre_process(inp: StepInput) -> StepResult:
    """Rule 2."""
    notes: list[str] = []
    return StepResult(_pre_process(inp.path, inp.work / "preprocessed.onnx", False, notes), notes=notes)


@step("split outliers")
def split_outliers(inp: StepInput) -> StepResult:
    """Rule 4: find a transformer's MatMuls fed by GELU; with the profile's `split_outliers`, move their
    outlier input channels into an FP32 part."""
    b, plan = inp.build, inp.state.get(QdqPlan)
    model = onnx.load(str(inp.path), load_external_data=False)
    plan.gelu_fed = gelu_fed_matmuls(model) if b.transformer else []
    if not (plan.gelu_fed and b.profile.split_outliers):
        return StepResult(inp.path)
    path, plan.split = split_outlier_channels(inp.path, inp.work / "outliers.onnx",
                                              [n for n in plan.gelu_fed if n not in b.keep_fp32], b.calibration)
    return StepResult(path, {"outlier_channels": plan.split.describe()} if plan.split.split else {})


@step("quantise QDQ")
def quantise_qdq(inp: StepInput) -> StepResult:
    """Rules 3, 5 and 6: static INT8 QDQ into the artifact."""
    b, plan = inp.build, inp.state.get(QdqPlan)
    model = onnx.load(str(inp.path), load_external_data=False)
    excluded = (activation_only_nodes(model) + [n for n in plan.gelu_fed if n not in plan.split.split]
                + plan.split.fp32_nodes if b.transformer else [])
    finals = output_activations(model)
    plan.output_activations = [n for n in finals if n]
    notes: list[str] = []
    if "" in finals:
        notes.append("an output's final activation has no node name, so the quantiser could not keep it FP32: "
                     "its output may be capped by its calibration range")
    plan.kept = _with_feeding_activations(model, list(b.keep_fp32) + plan.output_activations)
    excluded += [name for name in plan.kept if name not in excluded]
    method = _calibration_method(b.profile, b.calibration, notes)
    settings = _qdq_settings(b, plan, method, excluded)
    if plan.output_activations:
        settings["output_activations"] = (f"{len(plan.output_activations)} kept FP32 with unrounded inputs: "
                                          + ", ".join(plan.output_activations[:4]))
    config = QdqConfig(per_channel=b.profile.per_channel and plan.per_channel_ok, method=method,
                       symmetric=b.profile.activations == "symmetric", transformer=b.transformer, excluded=excluded)
    names = {i.name for i in model.graph.input}
    with b.progress.task("calibration", len(b.calibration), getattr(b.target, "name", "")) as advance:
        try:
            try:
                quantize_static_qdq(inp.path, b.artifact, b.calibration, names, config, True, advance)
            except Exception as exc:
                # Biases are where ONNX Runtime's quantiser breaks most (a bias shared between nodes cannot be
                # given one int32 scale; its int32 scale adjustment fails on some published graphs, whatever the
                # message): any failure is retried once with biases FP32, the faithful way round it.
                notes.append(f"biases kept FP32 (the quantiser failed with them INT32: {str(exc).splitlines()[0][:120]})")
                settings["biases"] = "fp32"
                quantize_static_qdq(inp.path, b.artifact, b.calibration, names, config, False, advance)
        except Exception as exc:
            raise InternalError(f"ONNX Runtime quantisation failed: {str(exc).splitlines()[0]}") from exc
    _check_split(b.artifact, plan.split, settings, notes)
    return StepResult(b.artifact, settings, notes)


@step("strip rounding")
def strip_rounding(inp: StepInput) -> StepResult:
    """Rule 7: the inputs of the nodes kept FP32 (by recovery, rule 9) are not rounded."""
    kept = inp.state.get(QdqPlan).kept
    if kept:
        strip_rounding_before(inp.path, set(kept))
    return StepResult(inp.path)


# Activations whose range is their own: quantised with a range calibration saw, they cap (rule 9).
OUTPUT_ACTIVATIONS = {"Sigmoid", "HardSigmoid", "Softmax", "LogSoftmax", "Tanh"}
_SHAPE_ONLY = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"}


def output_activations(model: onnx.ModelProto) -> list[str]:
    """Rule 9: the final activations of the graph's outputs (through reshapes), by node name."""
    producer, found = graph.producers(model), []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in _SHAPE_ONLY:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in OUTPUT_ACTIVATIONS and node.name not in found:
            found.append(node.name)  # an unnamed one cannot be excluded by name: quantise_qdq says so
    return found


@step("FP32 consumers read FP32")
def fp32_consumers(inp: StepInput) -> StepResult:
    """Rule 8."""
    unrounded = fp32_consumers_read_fp32(inp.path, set(TRANSFORMER_OPS))
    return StepResult(inp.path, {"fp32_consumers": f"{unrounded} FP32 inputs read unrounded (residual adds of "
                                                   "quantised tensors)"} if unrounded else {})


def qdq_steps(inputs: BuildInputs) -> list[Step]:
    """The INT8 QDQ recipe, in the order of the rules: the artifact is a QDQ graph any ONNX Runtime runs."""
    return ([upgrade_opset, pre_process, fold_shapes_step, split_outliers, quantise_qdq, strip_rounding]
            + ([fp32_consumers] if inputs.transformer else []))


def quantize_onnxruntime(src: Path, workdir: Path, dst: Path, calibration: list[Feed], profile: Profile,
                         transformer: bool, keep_fp32: Sequence[str] = ()) -> QuantizeResult:
    """Quantise `src` into `dst` with the INT8 QDQ recipe, from Python; nodes named in `keep_fp32` stay FP32."""
    # The INT8 steps read no target: a compile's BuildInputs carries one for the runtime's recipe.
    inputs = BuildInputs(target=None, profile=profile, precision="int8", onnx=src, original_onnx=src,  # type: ignore[arg-type]
                         calibration=calibration, transformer=transformer, model_config=None, static=None,
                         workdir=workdir, artifact=dst, keep_fp32=tuple(keep_fp32))
    result = run_recipe(qdq_steps(inputs), inputs)
    return QuantizeResult(result.artifact, result.notes, result.settings)


@dataclass(frozen=True)
class QdqConfig:
    per_channel: bool
    method: str  # minmax, percentile or entropy
    symmetric: bool  # activations
    transformer: bool
    excluded: list[str]


def quantize_static_qdq(src: Path, dst: Path, calibration: list[Feed], input_names: set[str], config: QdqConfig,
                        quantize_bias: bool, on_sample: Callable[[int], None] | None = None) -> None:
    """ONNX Runtime's static quantiser with the settings of rule 3."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        _Reader(calibration, input_names, on_sample),
        quant_format=QuantFormat.QDQ,
        per_channel=config.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                          "entropy": CalibrationMethod.Entropy}[config.method],
        op_types_to_quantize=TRANSFORMER_OPS if config.transformer else None,
        nodes_to_exclude=config.excluded,
        extra_options={
            "ActivationSymmetric": config.symmetric,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": config.symmetric,
            "CalibMovingAverage": True,
            "QuantizeBias": quantize_bias,
            # with biases FP32 (the fallback), ONNX Runtime's int32-bias weight-scale adjustment has nothing to do and
            # is where it breaks (a [1, N] Gemm bias read per channel): off
            **({} if quantize_bias else {"QDQDisableWeightAdjustForInt32Bias": True}),
            # A weight MatMul's output stays FP32 (ONNX Runtime runs DQ->MatMul as MatMulIntegerToFloat):
            # requantising it to UINT8 rounds the feed-forward outputs, whose range is the widest.
            **({"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]} if config.transformer else {}),
        },
    )


def _calibration_method(profile: Profile, calibration: list[Feed], notes: list[str]) -> str:
    """Rule 6: histogram calibration needs equal-shape samples."""
    shapes = {tuple(v.shape for v in f.values()) for f in calibration}
    if profile.calibration_method != "minmax" and len(shapes) > 1:
        notes.append(f"{profile.calibration_method} calibration needs equal-shape samples; these vary in length, "
                     "so min/max was used")
        return "minmax"
    return profile.calibration_method


def _qdq_settings(b: BuildInputs, plan: QdqPlan, method: str, excluded: list[str]) -> dict[str, str]:
    per_channel = b.profile.per_channel and plan.per_channel_ok
    return {
        "format": "QDQ",
        "weights": "int8, symmetric, " + ("per-channel" if per_channel else "per-tensor"),
        "activations": f"uint8, {b.profile.activations}",
        "calibration": f"{method}{' (moving average)' if method == 'minmax' else ''}, {len(b.calibration)} samples",
        "operators": ", ".join(TRANSFORMER_OPS) if b.transformer else "all supported",
        "kept_fp32": f"{len(excluded)} nodes: {_kept_kinds(b, plan)}" if excluded else "none",
    }


def _kept_kinds(b: BuildInputs, plan: QdqPlan) -> str:
    """What the nodes the quantiser leaves FP32 are (rules 3, 4, 5, 9)."""
    kinds = (["MatMuls of two activations, activation Gathers", "the outlier channels of MatMuls fed by GELU"
              if plan.split.split else "MatMuls fed by GELU"] if b.transformer else [])
    kinds += ["the layers recovery keeps"] if b.keep_fp32 else []
    kinds += ["the outputs' final activations"] if plan.output_activations else []
    return ", ".join(kinds)


def _check_split(artifact: Path, split: Split, settings: dict[str, str], notes: list[str]) -> None:
    """The quantiser skips a tensor it cannot type: say so, never claim INT8 that is not."""
    if not split.split:
        return
    quantised = {n.name for n in _dq_fed(onnx.load(str(artifact), load_external_data=False))}
    missed = [name for name in split.split if name not in quantised]
    if missed:
        notes.append(f"{len(missed)} of {len(split.split)} split MatMuls fed by GELU were left FP32 by the quantiser")
        settings["outlier_channels"] = f"{split.describe()}; {len(missed)} left FP32 by the quantiser"


def _dq_fed(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes whose first input is a DequantizeLinear output: the quantised ones."""
    producer = graph.producers(model)
    return [n for n in model.graph.node if n.input and producer.get(n.input[0]) is not None
            and producer[n.input[0]].op_type == "DequantizeLinear"]
