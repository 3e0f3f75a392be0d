"""Convert and quantise for OpenVINO: ONNX -> OpenVINO IR, INT8 through NNCF post-training quantisation.

1. The FP32 ONNX graph is read by OpenVINO; fixed input shapes are already in the graph.
2. INT8: `nncf.quantize` with the calibration feeds; transformers use NNCF's transformer model type
   (it keeps sensitive operations such as softmax inputs in FP32). `fast` uses the performance preset
   (symmetric activations); the others the mixed preset. A graph output's final sigmoid, softmax or tanh
   is left out of quantisation (NNCF's ignored scope): its range is its own, not a calibration's.
3. FP32: the converted model as is.
4. `openvino.save_model` compresses weights to FP16 unless told not to: edgekit always tells it not to,
   so an FP32 artifact is FP32 and INT8 scales stay exact.
5. `save_ir` writes every IR edgekit makes: OpenVINO names the nodes its passes create from a counter
   shared by the whole process (`Constant_89854`), so the same model built twice in one process (a
   project build) would differ; those layer names are renumbered in document order. Inputs and outputs
   (Parameter, Result) keep their names.
6. Transformers, for text the compile never saw (issue 15 §4; `benchmarks/fidelity.py`, all-MiniLM-L6-v2 on
   48 out-of-domain paragraphs, AMD EPYC): activation ranges are the calibration's absolute min/max, not
   the mean of each sample's (text of another kind reaches further); SmoothQuant's alpha for MatMuls is
   0.8 (NNCF's default 0.95 changed nothing here, 0.5 broke the model); and, with the profile's
   `split_outliers`, the first feed-forward down projection (the first MatMul fed by GELU) stays in float.
   cosine_min out of domain 0.9900 -> 0.9955, in domain 0.9938 -> 0.9949, for 3% of the speed (the
   outlier split of the `cpu` recipe gave 0.9951 for 8%; every down projection in float 0.9974 for 17%).
7. A quantiser error that names a node (NNCF: "Could not find a node X in NNCFGraph", as on `If` subgraphs
   and recurrent state; a KeyError naming a graph node key) is not the end: the node is left in float and NNCF runs again, up to MAX_EXCLUSIONS
   times; the notes and report.json's `quantization.left_in_float` name each node and why.
8. A lookup of constants (a Gather whose table and indices are both constants: CLIP's vision position embedding)
   is folded to its value before NNCF, which otherwise fails on it (a lookup whose result is a weight).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable

from ..config import Profile
from ..errors import InternalError, first_line
from ..runtimes import Feed
from .quantize_ort import QuantizeResult

log = logging.getLogger(__name__)


_LAYER = re.compile(r'(<layer id="\d+" name=")([^"]*)(" type="([^"]+)")')
_COUNTER_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_(\d+)(_\d+)*$")


def normalise_layer_names(xml: str) -> str:
    """Counter-generated layer names (`Type_123`, not inputs or outputs) renumbered in document order, one
    new name per layer (two layers may share a counter name in one process and not in another)."""
    kept = {m.group(2) for m in _LAYER.finditer(xml)
            if m.group(4) in ("Parameter", "Result") or not _COUNTER_NAME.match(m.group(2))}
    counter = 0

    def rename(m: re.Match) -> str:
        nonlocal counter
        name, kind = m.group(2), m.group(4)
        if kind in ("Parameter", "Result") or not _COUNTER_NAME.match(name):
            return m.group(0)
        prefix = _COUNTER_NAME.match(name).group(1)
        while True:
            candidate = f"{prefix}_{counter}"
            counter += 1
            if candidate not in kept:
                return f"{m.group(1)}{candidate}{m.group(3)}"

    return _LAYER.sub(rename, xml)


def save_ir(model, dst: Path, compress_to_fp16: bool) -> None:
    """`openvino.save_model`, then the layer names made reproducible (rule 5)."""
    import openvino as ov

    ov.save_model(model, str(dst), compress_to_fp16=compress_to_fp16)
    text = Path(dst).read_text(encoding="utf-8")
    Path(dst).write_text(normalise_layer_names(text), encoding="utf-8")


def import_nncf():
    """nncf, with its own log (a handler of its own, bound at import) held to errors."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    return nncf


def _counted(transform: Callable, n: int, on_sample: Callable[[int], None] | None) -> Callable:
    """`transform`, telling `on_sample` which sample of the pass (1..n) it transforms."""
    if on_sample is None:
        return transform
    calls = 0

    def counted(item):
        nonlocal calls
        calls += 1
        on_sample((calls - 1) % n + 1)
        return transform(item)

    return counted


# A graph output's final activation: its range is its own, never a calibration's (quantize_ort.py rule 9).
OUTPUT_ACTIVATION_TYPES = {"Sigmoid", "SoftMax", "Softmax", "LogSoftmax", "Tanh", "HSigmoid"}
_SHAPE_TYPES = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Convert"}


def output_activations(model) -> list[str]:
    """The friendly names of the ops that end the model's outputs (through reshapes) in a sigmoid, softmax or tanh:
    NNCF leaves them out of quantisation."""
    names = []
    for result in model.get_results():
        node = result.input_value(0).get_node()
        while node.get_type_name() in _SHAPE_TYPES and node.get_input_size():
            node = node.input_value(0).get_node()
        if node.get_type_name() in OUTPUT_ACTIVATION_TYPES and node.get_friendly_name() not in names:
            names.append(node.get_friendly_name())
    return names


TRANSFORMER_SMOOTH_QUANT = 0.8


def transformer_levers(src: Path, profile: Profile) -> tuple[dict, list[str], dict]:
    """Rule 6: (nncf.quantize keyword arguments, layer names kept in float, settings to record)."""
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from .quantize_ort import gelu_fed_matmuls

    arguments = {"advanced_parameters": AdvancedQuantizationParameters(
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=TRANSFORMER_SMOOTH_QUANT))}
    settings = {"activation_ranges": "calibration min/max", "smooth_quant_alpha": TRANSFORMER_SMOOTH_QUANT}
    down = gelu_fed_matmuls(onnx.load(str(src), load_external_data=False)) if profile.split_outliers else []
    if down:
        settings["kept_in_float"] = f"the first feed-forward down projection: {down[0]}"
    return arguments, down[:1], settings


_NAMED_NODE = re.compile(r"""node ['"]?([^'"\s]+?)['"]? (?:in|of|from) NNCFGraph""", re.IGNORECASE)
_NODE_KEY = re.compile(r"^(\d+) (\S+)$")  # an NNCFGraph node key ("426 /vision_model/.../Gather") a KeyError names


def failing_node(exc: Exception, message: str) -> str | None:
    """Rule 7: the node a quantiser error names, or None."""
    found = _NAMED_NODE.search(message)
    if found is not None:
        return found.group(1)
    key = _NODE_KEY.match(str(exc.args[0])) if isinstance(exc, KeyError) and exc.args else None
    return key.group(2) if key is not None else None
MAX_EXCLUSIONS = 8


def fold_constant_lookups(model) -> int:
    """Rule 8: every Gather whose data, indices and axis are constants (batch_dims 0) replaced by its value; how many."""
    import numpy as np
    import openvino as ov

    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Gather" or op.get_attributes().get("batch_dims", 0) != 0:
            continue
        sources = [i.get_source_output().get_node() for i in op.inputs()]
        if len(sources) != 3 or any(n.get_type_name() != "Constant" for n in sources):
            continue
        data, indices, axis = (n.get_data() for n in sources)
        value = np.take(data, indices.astype(np.int64), axis=int(np.asarray(axis).ravel()[0]))
        constant = ov.op.Constant(np.ascontiguousarray(value))
        constant.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(constant.output(0))
        count += 1
    return count


def _quantize_excluding(nncf, model, ignored: list[str], arguments: dict) -> tuple[object, dict[str, str]]:
    """Rule 7: `nncf.quantize`, and when it fails naming a node, again with that node left in float (at most
    MAX_EXCLUSIONS times). (quantised model, {node left in float: the error that named it})."""
    failed: dict[str, str] = {}
    while True:
        names = ignored + list(failed)
        try:
            return nncf.quantize(model, **arguments, **({"ignored_scope": nncf.IgnoredScope(names=names, validate=False)}
                                                        if names else {})), failed
        except Exception as exc:
            message = first_line(exc)
            node = failing_node(exc, message)
            if node is None or node in failed or len(failed) >= MAX_EXCLUSIONS:
                raise InternalError(f"NNCF quantisation failed: {message}"
                                    + (f" (after leaving {', '.join(failed)} in float)" if failed else "")) from exc
            failed[node] = message[:120] if not isinstance(exc, KeyError) else f"NNCF found no node {message} in its graph"


def convert_openvino(src: Path, dst: Path, calibration: list[Feed], profile: Profile, transformer: bool,
                     on_sample: Callable[[int], None] | None = None) -> QuantizeResult:
    """FP32 or INT8 IR; `on_sample(k)`: calibration sample k of n is fed (NNCF may make several passes)."""
    import openvino as ov

    try:
        model = ov.Core().read_model(str(src))
    except Exception as exc:
        raise InternalError(f"OpenVINO could not read the ONNX graph: {str(exc).splitlines()[0]}") from exc
    settings: dict = {"ir": "OpenVINO IR, weights not compressed to FP16"}
    notes: list[str] = []
    if profile.precision == "int8":
        nncf = import_nncf()

        input_names = [next(iter(i.get_names())) for i in model.inputs]
        dataset = nncf.Dataset(calibration, _counted(lambda feed: {k: feed[k] for k in input_names if k in feed},
                                                     len(calibration), on_sample))
        preset = nncf.QuantizationPreset.PERFORMANCE if profile.activations == "symmetric" else nncf.QuantizationPreset.MIXED
        folded = fold_constant_lookups(model)
        if folded:
            notes.append(f"{folded} lookup(s) of constants folded to constants before NNCF (a position-embedding Gather: "
                         "NNCF cannot quantise a lookup whose result is itself a weight)")
        finals = output_activations(model)
        arguments, kept, levers = transformer_levers(src, profile) if transformer else ({}, [], {})
        model, failed = _quantize_excluding(nncf, model, finals + kept, dict(
            calibration_dataset=dataset, preset=preset, model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            subset_size=len(calibration), **arguments))
        if failed:
            described = [f"{name} ({why})" for name, why in failed.items()]
            levers["left_in_float"] = "; ".join(described)
            notes.append(f"NNCF could not quantise {len(failed)} node(s); left in float: " + ", ".join(described))
        settings.update({
            "quantizer": f"nncf {nncf.__version__} post-training quantisation",
            "preset": preset.value if hasattr(preset, "value") else str(preset),
            "model_type": "transformer" if transformer else "default",
            "calibration": f"{len(calibration)} samples",
            **levers,
            **({"output_activations": f"{len(finals)} kept in float: {', '.join(finals[:4])}"} if finals else {}),
        })
    save_ir(model, dst, compress_to_fp16=False)
    return QuantizeResult(dst, notes, settings)
