"""FP16 for GPUs (ONNX Runtime, CUDA): weights and compute in FP16, inputs and outputs kept FP32.

Rules:
1. `onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`: the graph's
   inputs and outputs stay FP32 (Cast nodes at the edges), so an application feeds and reads the
   same tensors as from the FP32 model.
2. Numerically sensitive operators stay FP32, with casts around them: normalisations
   (LayerNormalization, SkipLayerNormalization, SimplifiedLayerNormalization), Softmax and
   LogSoftmax, and the reductions and powers of an unfused layer norm or a pooling (ReduceMean,
   ReduceSum, ReduceSumSquare, ReduceL2, Pow, Sqrt): sums of many FP16 terms lose bits and squares
   overflow FP16's 65504. The converter's own block list (operators with no FP16 kernel) is kept too.
3. The converter appends the casts it inserts, so the graph is sorted topologically again; it must
   then pass `onnx.checker`, or the stage fails.
4. GPU fusions are ONNX Runtime's own: the CUDA provider fuses attention, layer norm and GELU when it
   loads the model (ORT_ENABLE_ALL). The offline fusion scripts are not run: on exported graphs they
   match little (measured on all-MiniLM-L6-v2: BiasGelu only) and leave the converter without the
   type information it needs to keep the blocked operators valid.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from ..errors import InternalError, first_line
from .quantize_ort import QuantizeResult

SENSITIVE_OPS = ["LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "Softmax", "LogSoftmax",
                 "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Pow", "Sqrt"]


def convert_fp16(src: Path, dst: Path) -> QuantizeResult:
    import onnxruntime
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(src))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS))
    kept = Counter(n.op_type for n in model.graph.node if n.op_type in SENSITIVE_OPS)
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
        sorter = OnnxModel(converted)
        sorter.topological_sort()
        converted = sorter.model
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise InternalError(f"FP16 conversion failed: {first_line(exc)}") from exc
    onnx.save(converted, str(dst))
    settings = {
        "format": "FP16 ONNX",
        "converter": f"onnxruntime.transformers.float16 (onnxruntime {onnxruntime.__version__})",
        "weights": "fp16",
        "inputs_outputs": "fp32 (keep_io_types)",
        "kept_fp32": ", ".join(f"{op}×{n}" for op, n in sorted(kept.items())) or "none",
    }
    return QuantizeResult(dst, [], settings)


def float_initializer_types(model: onnx.ModelProto) -> Counter:
    """Bytes of floating-point initializers by ONNX type name (FLOAT16, FLOAT), for reports and tests."""
    sizes: Counter = Counter()
    for init in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(init.data_type)
        if name in ("FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE"):
            sizes[name] += onnx.numpy_helper.to_array(init).nbytes
    return sizes
