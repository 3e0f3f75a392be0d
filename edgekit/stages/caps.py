"""Caps: the ONNX opset and IR version a target's deployed runtime accepts.

Rules:
1. A target may set `max_opset` (the default `ai.onnx` domain) and `max_ir_version`.
2. The ONNX graph every artifact is built from (the export, or the given `.onnx` file) is checked
   against every target's caps before any artifact is built.
3. A graph beyond a cap is a usage error naming the target, the cap and the graph's figure. edgekit
   never down-converts silently: a down-conversion can change numerics or fail half-way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import graph
from ..config import Target
from ..errors import UsageError


def check_caps(onnx_path: Path, targets: Sequence[Target], what: str = "the ONNX graph") -> None:
    capped = [t for t in targets if t.max_opset is not None or t.max_ir_version is not None]
    if not capped:
        return
    model = graph.load(onnx_path, load_external_data=False)
    opset, ir_version = graph.opset(model), int(model.ir_version)
    for t in capped:
        if t.max_opset is not None and opset > t.max_opset:
            raise UsageError(f"target {t.name} accepts ONNX opset {t.max_opset} at most; {what} has opset {opset} "
                             f"(export or convert the model at opset {t.max_opset} or lower)")
        if t.max_ir_version is not None and ir_version > t.max_ir_version:
            raise UsageError(f"target {t.name} accepts ONNX IR version {t.max_ir_version} at most; {what} has IR version "
                             f"{ir_version} (save it with an older onnx, or raise the target's max_ir_version)")
