"""Convert for OpenVINO devices other than the CPU: FP16 IR (GPU, NPU) and INT8-weight IR (NPU).

Rules:
1. OpenVINO reads the ONNX graph. For a static-shape target the graph's inputs are already fixed
   (stages/static_shapes.py) and the model is reshaped to them again, so that no dimension inside
   stays dynamic; the saved IR is read back and checked (static_shapes rule 5).
2. `fp16`: `openvino.save_model(..., compress_to_fp16=True)`: weights stored FP16, the precision the
   GPU and the NPU compute in.
3. `int8` on the NPU: NNCF weight compression, INT8_SYM, one scale per output channel and no zero
   point, then FP16 for the rest. This is what the NPU executes: it decompresses the INT8 weights
   and computes in FP16. Full post-training quantisation (INT8 activations) was not chosen: the
   activations would then need calibrated scales, which clip a transformer's outliers and make the
   result depend on the calibration set; weight compression needs no data and keeps FP16 activation
   range. Symmetric because the NPU's weight decompression has no zero point (OpenVINO's NPU guide
   asks for symmetric, channel-wise compression).
4. `int8` on a GPU: NNCF post-training quantisation, as for intel-cpu (stages/quantize_ov.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

from ..config import Profile, Target
from ..errors import InternalError
from ..runtimes import Feed
from .quantize_ort import QuantizeResult
from .quantize_ov import convert_openvino, import_nncf, save_ir
from .static_shapes import StaticShapes, check_ir_static

log = logging.getLogger(__name__)


def ir_element_types(xml: Path) -> Counter:
    """Bytes of the IR's constants by element type (i8, f16, f32, ...), read from model.xml."""
    sizes: Counter = Counter()
    for layer in ElementTree.parse(xml).getroot().iter("layer"):
        data = layer.find("data")
        if layer.get("type") == "Const" and data is not None and data.get("size"):
            sizes[data.get("element_type", "?")] += int(data.get("size"))
    return sizes


def calibrates(target: Target, precision: str) -> bool:
    """Whether the device build quantises with the calibration samples (rule 4); an NPU's INT8 compresses weights only."""
    return precision == "int8" and target.device.split(".")[0] != "NPU"


def convert_openvino_device(src: Path, dst: Path, target: Target, precision: str, calibration: list[Feed], profile: Profile,
                            transformer: bool, static: StaticShapes | None, on_sample=None) -> QuantizeResult:
    import openvino as ov

    if calibrates(target, precision):
        result = convert_openvino(src, dst, calibration, profile, transformer, on_sample)  # rule 4
        if static is not None:
            check_ir_static(ov.Core().read_model(str(dst)), target.name)
        return result
    try:
        model = ov.Core().read_model(str(src))
    except Exception as exc:
        raise InternalError(f"OpenVINO could not read the ONNX graph: {str(exc).splitlines()[0]}") from exc
    if static is not None:
        try:
            model.reshape({next(iter(p.get_names())): ov.PartialShape(static.shapes[next(iter(p.get_names()))])
                           for p in model.inputs if next(iter(p.get_names())) in static.shapes})
        except Exception as exc:
            raise InternalError(f"OpenVINO could not fix the input shapes ({static.describe()}): {str(exc).splitlines()[0]}") from exc
    settings: dict = {"ir": "OpenVINO IR, weights FP16 (compress_to_fp16)", "compute": "fp16 on the device"}
    if precision == "int8":
        nncf = import_nncf()

        try:
            model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
        except Exception as exc:
            raise InternalError(f"NNCF weight compression failed: {str(exc).splitlines()[0]}") from exc
        settings.update({
            "ir": "OpenVINO IR, INT8 symmetric weights, other constants FP16",
            "quantizer": f"nncf {nncf.__version__} weight compression",
            "weights": "int8, symmetric, per output channel (INT8_SYM)",
            "activations": "fp16 (not quantised)",
        })
    save_ir(model, dst, compress_to_fp16=True)
    saved = ov.Core().read_model(str(dst))
    if static is not None:
        check_ir_static(saved, target.name)
        settings["static_shapes"] = static.describe()
    types = ir_element_types(dst)
    settings["constants"] = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in types.most_common() if v >= 1e5) or "none"
    return QuantizeResult(dst, [], settings)
