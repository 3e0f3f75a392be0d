"""Optimise: onnxruntime's transformer fusions (attention, embedding + layer norm, GELU) for FP32
artifacts of the `cpu` target.

1. Only transformer encoders are fused (BERT-like `model_type`s and ViT); anything else is left as is
   — ONNX Runtime applies its generic fusions when it loads the model.
2. Graphs to be quantised are not fused here (the pipeline does not call this for INT8): the fused
   contrib operators carry no type information for the quantiser, so the tensors after them (the GELU
   output feeding the feed-forward down projection) silently lose their activation quantisation and
   ONNX Runtime falls back to a slow weight-only kernel. Measured on all-MiniLM-L6-v2: quantising the
   plain export is as fast and more faithful; ONNX Runtime still fuses layer norm and GELU at load.
3. A failed fusion is not fatal: the unfused graph is returned and the reason noted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "distilbert", "camembert", "electra", "mpnet", "albert", "deberta", "ernie"}


@dataclass
class OptimizeResult:
    path: Path
    fused: dict[str, int] = field(default_factory=dict)
    note: str = ""


def fuse_transformer(src: Path, dst: Path, model_type: str | None, num_heads: int = 0, hidden_size: int = 0) -> OptimizeResult:
    if model_type not in _BERT_LIKE and model_type != "vit":
        return OptimizeResult(src, note=f"no transformer fusions for model type '{model_type or 'unknown'}'")
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    ort_type = "vit" if model_type == "vit" else "bert"
    options = FusionOptions(ort_type)
    try:
        optimized = optimize_model(str(src), model_type=ort_type, num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options)
        stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(dst))
    except Exception as exc:  # the fusion scripts are pattern matchers; they fail on unusual graphs
        log.warning("transformer fusions failed (%s); continuing unfused", exc)
        return OptimizeResult(src, note=f"transformer fusions failed: {str(exc).splitlines()[0]}")
    return OptimizeResult(dst, fused=stats)
