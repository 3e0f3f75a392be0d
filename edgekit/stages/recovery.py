"""Recovery: when an INT8 artifact misses an accuracy budget, keep its most sensitive layers in FP32.

Rules:
1. Sensitivity (ONNX Runtime): for each quantised layer, the INT8 graph is run with that layer alone
   computing in FP32 (its weight and activation inputs without rounding), and the worst-case output
   cosine against FP32 on a few evaluation feeds is compared with the all-INT8 graph's. Layers are
   ranked by that gain, largest first: a measure of each layer's effect on what the budget judges,
   at the cost of one session per layer and no re-quantisation.
2. Search: the `k` most sensitive layers stay FP32 and the artifact is rebuilt and re-evaluated, with
   k = 1, 2, 4, ... until the budget is met; then the smallest k between the last miss and the first
   hit is found by bisection. Fewest layers first: the artifact stays as INT8 as the budget allows.
3. Bounds: at most `max_layers` layers in FP32 and `seconds` of wall time. When neither is enough,
   the best artifact found (highest score) is kept and the verdict stays `fail`, with every attempt
   recorded.
4. OpenVINO: NNCF's accuracy-control search does the same job natively
   (`nncf.quantize_with_accuracy_control`) with the worst-case output cosine as its metric, so it
   answers the `min_cosine` budget. NNCF bounds its search by iterations, not time: one iteration per
   started minute of the profile's `seconds`, and its ranking runs on at most 8 evaluation samples.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from .. import graph
from ..errors import first_line
from ..runtimes import Feed
from .quantize_ov import import_nncf, save_ir

log = logging.getLogger(__name__)

QUANTISED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather")


@dataclass
class Attempt:
    fp32_layers: int
    score: float  # higher is better (e.g. cosine_min)
    passed: bool
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Recovery:
    method: str
    recovered: bool
    kept_fp32: list[str]
    candidates: int
    before: float
    after: float
    attempts: list[Attempt] = field(default_factory=list)
    note: str = ""
    metric: str = "cosine_min"  # the figure before/after and the attempts' scores are in (the one that gates)

    def to_dict(self) -> dict:
        return {"method": self.method, "recovered": self.recovered, "kept_fp32": self.kept_fp32,
                "kept_fp32_count": len(self.kept_fp32), "candidates": self.candidates,
                "int8_fraction": 1 - len(self.kept_fp32) / self.candidates if self.candidates else 1.0,
                "score_before": self.before, "score_after": self.after,
                "attempts": [a.to_dict() for a in self.attempts], "note": self.note, "metric": self.metric}


def quantised_layers(qdq_path: Path) -> list[onnx.NodeProto]:
    """Layers of a QDQ graph that were quantised: a quantisable op with a DequantizeLinear input."""
    model = onnx.load(str(qdq_path), load_external_data=False)
    producer = graph.producers(model)
    return [n for n in model.graph.node if n.op_type in QUANTISED_OPS
            and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)]


def _revert(qdq: onnx.ModelProto, float_model: onnx.ModelProto, layer: str) -> onnx.ModelProto:
    """A copy of the QDQ graph in which `layer` computes in FP32.

    Its weight inputs read the FP32 initializers of the float graph. Its activation inputs skip the
    rounding but keep the clamp: Q->DQ becomes a Clip to the quantised range, because the quantiser
    may have removed a ReLU whose work the clamp now does. A graph input it reads is read as given, clamp
    and all gone: nothing was folded into it, and its calibration range may be what loses accuracy (the
    rebuild that keeps the layer FP32 leaves the input unquantised too).
    """
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    producer = graph.producers(model)
    inits = {i.name: i for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    original = next((n for n in float_model.graph.node if n.name == layer), None)
    node = next(n for n in model.graph.node if n.name == layer)
    new_nodes = []
    for index, name in enumerate(list(node.input)):
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in graph_inputs:
            node.input[index] = q.input[0]  # a graph input: no ReLU was folded into its rounding, no clamp to keep
        elif q is not None and q.op_type == "QuantizeLinear":
            scale = numpy_helper.to_array(inits[q.input[1]]).astype(np.float64)
            zero = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits else np.zeros((), np.uint8)
            info = np.iinfo(zero.dtype)
            low = float(np.min((info.min - zero.astype(np.float64)) * scale))
            high = float(np.max((info.max - zero.astype(np.float64)) * scale))
            bounds = [numpy_helper.from_array(np.array(v, np.float32), f"{layer}__in{index}_{tag}") for v, tag in ((low, "min"), (high, "max"))]
            model.graph.initializer.extend(bounds)
            clipped = f"{layer}__in{index}_fp32"
            new_nodes.append(helper.make_node("Clip", [q.input[0], bounds[0].name, bounds[1].name], [clipped]))
            node.input[index] = clipped
        elif original is not None and index < len(original.input) and original.input[index] in float_inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(float_inits[original.input[index]])
            copy.name = f"{original.input[index]}__fp32"
            model.graph.initializer.append(copy)
            node.input[index] = copy.name
    nodes = list(model.graph.node)
    position = nodes.index(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[:position] + new_nodes + nodes[position:])
    return model


def worst_cosine(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> float:
    """The worst output cosine over the samples: the default measure of a candidate."""
    from .verify import cosine

    return min([1.0] + [cosine(r, g) for ref, got in zip(reference, outputs) for r, g in zip(ref, got)])


def _score(session, feeds: list[Feed], reference: list[list[np.ndarray]], measure=worst_cosine) -> float:
    inputs = {i.name for i in session.get_inputs()}
    return measure(reference, [session.run(None, {k: v for k, v in f.items() if k in inputs}) for f in feeds])


def rank_onnxruntime(float_path: Path, qdq_path: Path, feeds: list[Feed],
                     on_layer: Callable[[int, int], None] | None = None,
                     measure: Callable[[list, list], float] = worst_cosine) -> list[tuple[str, float]]:
    """Quantised layers by how much `measure` (the figure that gates; the worst output cosine by default) on
    `feeds` improves when that layer alone goes back to FP32 (largest first; ties by the worst cosine). One
    session per layer; no re-quantisation. `on_layer(k, n)`: layer k of n is ranked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    float_model = onnx.load(str(float_path))
    qdq = onnx.load(str(qdq_path))
    float_names = {n.name for n in float_model.graph.node}
    reference_session = ort.InferenceSession(str(float_path), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in reference_session.get_inputs()}
    reference = [reference_session.run(None, {k: v for k, v in f.items() if k in inputs}) for f in feeds]
    def both(session) -> tuple[float, float]:
        return _score(session, feeds, reference, measure), _score(session, feeds, reference)

    base = both(ort.InferenceSession(str(qdq_path), options, providers=["CPUExecutionProvider"]))
    ranked = []
    layers = [layer for layer in quantised_layers(qdq_path) if layer.name in float_names]
    for layer in layers:
        reverted = _revert(qdq, float_model, layer.name)
        gain = both(ort.InferenceSession(reverted.SerializeToString(), options, providers=["CPUExecutionProvider"]))
        ranked.append((layer.name, (gain[0] - base[0], gain[1] - base[1])))
        if on_layer:
            on_layer(len(ranked), len(layers))
    ranked.sort(key=lambda item: item[1], reverse=True)
    return [(name, gain[0]) for name, gain in ranked]


def most_attempts(limit: int) -> int:
    """The most attempts `search` makes with at most `limit` layers (rule 2): the doubling (1, 2, 4, ...,
    limit) and a bisection below the first hit."""
    doubling = math.ceil(math.log2(limit)) + 1 if limit > 1 else 1
    return max(1, 2 * doubling - 2)


def search(ranked: list[str], rebuild: Callable[[list[str]], Path], evaluate: Callable[[Path], tuple[float, bool]],
           before: float, max_layers: int, seconds: float, on_attempt: Callable[[Attempt], None] | None = None,
           started: float | None = None) -> tuple[Recovery, Path | None]:
    """Find the fewest top-ranked layers to keep FP32 so that `evaluate` passes (rule 2). The bound `seconds` counts
    from `started` (the recovery's start, ranking included) and no attempt begins that the mean attempt so far
    would carry past it."""
    deadline = (started if started is not None else time.monotonic()) + seconds
    attempts: list[Attempt] = []
    best: tuple[float, int, Path | None] = (before, 0, None)
    passing: dict[int, Path] = {}

    def attempt(k: int) -> bool:
        nonlocal best
        started = time.monotonic()
        path = rebuild(ranked[:k])
        score, ok = evaluate(path)
        record = Attempt(k, score, ok, time.monotonic() - started)
        attempts.append(record)
        if on_attempt:
            on_attempt(record)
        if ok:
            passing[k] = path
        if score > best[0] or (ok and k < best[1]):
            best = (score, k, path)
        return ok

    def time_left() -> bool:
        expected = sum(a.seconds for a in attempts) / len(attempts) if attempts else 0.0
        return time.monotonic() + expected < deadline

    limit = min(max_layers, len(ranked))
    low, high, k = 0, None, 1
    while k <= limit and time_left():
        if attempt(k):
            high = k
            break
        low = k
        k = min(k * 2, limit) if k < limit else limit + 1
    while high is not None and high - low > 1 and time_left():
        mid = (low + high) // 2
        if attempt(mid):
            high = mid
        else:
            low = mid
    if high is not None:
        chosen = passing[high]
        score = next(a.score for a in attempts if a.fp32_layers == high)
        return Recovery("layer fallback by sensitivity", True, ranked[:high], 0, before, score, attempts), chosen
    note = ("time bound reached" if not time_left() else f"budget not met with {limit} layer(s) in FP32 (the profile's limit)")
    return Recovery("layer fallback by sensitivity", False, ranked[:best[1]], 0, before, best[0], attempts, note), best[2]


def _quantised_ops(model) -> set[str]:
    """OpenVINO ops fed by a FakeQuantize (the quantised inputs of a quantised model)."""
    names = set()
    for op in model.get_ops():
        if op.get_type_name() == "FakeQuantize":
            for output in op.outputs():
                for target in output.get_target_inputs():
                    names.add(target.get_node().get_friendly_name())
    return names


def recover_openvino(src: Path, artifact: Path, calibration: list[Feed], evaluation: list[Feed],
                     reference: list[list[np.ndarray]], min_score: float, before: float, transformer: bool,
                     preset: str, max_iterations: int, on_validation: Callable[[int, float], None] | None = None,
                     as_shipped: Callable[[Any], float] | None = None,
                     measure: Callable[[list, list], float] | None = None, metric: str = "cosine_min") -> Recovery:
    """NNCF accuracy control with the worst-case output cosine as the metric (rule 4). `artifact` (the
    plain INT8 IR) is replaced by the restored one when NNCF improved on it. `on_validation(k, score)`:
    NNCF's k-th validation of a candidate scored `score`. `as_shipped(model)`: the restored model's figure
    with the settings the artifact ships with (float precision included); it decides, not NNCF's own
    validations (which run with OpenVINO's default CPU settings). `measure(reference, outputs)`: the figure that
    gates (`metric`, at least `min_score`), NNCF's metric; the worst output cosine by default."""
    import openvino as ov

    nncf = import_nncf()

    from .verify import cosine

    from .quantize_ov import fold_constant_lookups

    core = ov.Core()
    model = core.read_model(str(src))
    fold_constant_lookups(model)  # as the build did (quantize_ov rule 8)
    input_names = [next(iter(i.get_names())) for i in model.inputs]

    def feed_of(item):
        return {k: item[1][k] for k in input_names if k in item[1]}

    def validate(compiled, items) -> tuple[float, list[float]]:
        values, refs, outs = [], [], []
        for index, feed in items:
            result = compiled({k: feed[k] for k in input_names if k in feed})
            got = [np.asarray(result[o]) for o in compiled.outputs]
            values.append(min(cosine(r, g) for r, g in zip(reference[index], got)))
            refs.append(reference[index])
            outs.append(got)
        validations.append(measure(refs, outs) if measure is not None else min(values))
        if on_validation:
            on_validation(len(validations), validations[-1])
        return validations[-1], values

    validations: list[float] = []

    started = time.monotonic()
    try:
        restored = _accuracy_control(nncf, model, calibration, evaluation, feed_of, validate, min_score, preset, transformer,
                                     max_iterations)
    except Exception as exc:  # the INT8 artifact stays as built; the record says why it was not recovered
        message = first_line(exc)
        return Recovery("NNCF accuracy control", False, [], len(_quantised_ops(core.read_model(str(artifact)))), before,
                        before, [], f"NNCF accuracy control failed ({type(exc).__name__}: {message[:100]})")
    after = (as_shipped(restored) if as_shipped is not None else
             validate(core.compile_model(restored, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), list(enumerate(evaluation)))[0])
    return _keep_if_better(core, restored, artifact, before, after, min_score, max_iterations, started, metric)


def _accuracy_control(nncf, model, calibration, evaluation, feed_of, validate, min_score, preset, transformer,
                      max_iterations):
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    return nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(list(enumerate(calibration)), feed_of),
        nncf.Dataset(list(enumerate(evaluation)), feed_of),
        validate,
        max_drop=max(0.0, 1.0 - min_score),
        drop_type=nncf.DropType.ABSOLUTE,
        preset=getattr(nncf.QuantizationPreset, preset),
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        subset_size=len(calibration),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=max_iterations, ranking_subset_size=min(len(evaluation), 8)),
    )


def _keep_if_better(core, restored, artifact: Path, before: float, after: float, min_score: float, max_iterations: int,
                    started: float, metric: str = "cosine_min") -> Recovery:
    """NNCF's restored model replaces the artifact when it scores better; the record says which layers it restored."""
    quantised_before = _quantised_ops(core.read_model(str(artifact)))
    kept = sorted(quantised_before - _quantised_ops(restored))
    if after > before:
        save_ir(restored, artifact, compress_to_fp16=False)
    else:
        kept, after = [], before
    passed = after >= min_score
    return Recovery(f"NNCF accuracy control ({metric})", passed, kept, len(quantised_before), before, after,
                    [Attempt(len(kept), after, passed, time.monotonic() - started)],
                    "" if passed else f"NNCF stopped after at most {max_iterations} iteration(s)")
