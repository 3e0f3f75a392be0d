"""Convert and quantise for OpenVINO: ONNX -> OpenVINO IR, INT8 through NNCF post-training quantisation.

1. The FP32 ONNX graph is read by OpenVINO; fixed input shapes are already in the graph.
2. INT8: `nncf.quantize` with the calibration feeds; transformers use NNCF's transformer model type
   (it keeps sensitive operations such as softmax inputs in FP32). `fast` uses the performance preset
   (symmetric activations); the others the mixed preset.
3. FP32: the converted model as is.
4. `openvino.save_model` compresses weights to FP16 unless told not to: edgekit always tells it not to,
   so an FP32 artifact is FP32 and INT8 scales stay exact.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import Profile
from ..errors import InternalError
from ..runtimes import Feed
from .quantize_ort import QuantizeResult

log = logging.getLogger(__name__)


def import_nncf():
    """nncf, with its own log (a handler of its own, bound at import) held to errors."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    return nncf


def convert_openvino(src: Path, dst: Path, calibration: list[Feed], profile: Profile, transformer: bool) -> QuantizeResult:
    import openvino as ov

    try:
        model = ov.Core().read_model(str(src))
    except Exception as exc:
        raise InternalError(f"OpenVINO could not read the ONNX graph: {str(exc).splitlines()[0]}") from exc
    settings: dict = {"ir": "OpenVINO IR, weights not compressed to FP16"}
    if profile.precision == "int8":
        nncf = import_nncf()

        input_names = [next(iter(i.get_names())) for i in model.inputs]
        dataset = nncf.Dataset(calibration, lambda feed: {k: feed[k] for k in input_names if k in feed})
        preset = nncf.QuantizationPreset.PERFORMANCE if profile.activations == "symmetric" else nncf.QuantizationPreset.MIXED
        try:
            model = nncf.quantize(
                model,
                dataset,
                preset=preset,
                model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                subset_size=len(calibration),
            )
        except Exception as exc:
            raise InternalError(f"NNCF quantisation failed: {str(exc).splitlines()[0]}") from exc
        settings.update({
            "quantizer": f"nncf {nncf.__version__} post-training quantisation",
            "preset": preset.value if hasattr(preset, "value") else str(preset),
            "model_type": "transformer" if transformer else "default",
            "calibration": f"{len(calibration)} samples",
        })
    ov.save_model(model, str(dst), compress_to_fp16=False)
    return QuantizeResult(dst, [], settings)
