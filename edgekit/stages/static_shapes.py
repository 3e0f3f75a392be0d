"""Static shapes: every input dimension fixed at compile time, for devices that accept nothing else (NPUs).

Rules:
1. A dimension fixed in the graph, or by `--shape`, stays as it is.
2. A free dimension of a Hugging Face model takes its task's default: dim 0 of every input is the
   batch, 1; dim 1 of a text model's 2-D integer input is the sequence, the profile's
   `sequence_length` (at most the config's `max_position_embeddings`); channels, height and width of
   an image model's 4-D float input come from the config's `num_channels` and `image_size`.
   An `.onnx` file declares no task: its free dimensions need `--shape`, as for every target.
3. A dimension with neither is a usage error naming the target, the input and the dimension, with a
   `--shape` that would fix it.
4. The fixed shapes are written into the ONNX graph's inputs (`graph.apply_shapes`); text samples
   built for them are padded to the fixed length (edgekit/data.py pads whenever the sequence
   dimension is fixed), and the original is run on those same padded samples for verification.
5. After conversion the OpenVINO IR is checked: every input and output shape must be static, or the
   build fails here rather than on the device.
6. A task family whose every sample has the same shapes says so (`fixed_shapes`: a zero-shot model's prompts
   [classes, tokens] and image): those shapes are taken before any default (`--shape` still wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import graph
from ..errors import InternalError, UsageError
from ..graph import InputSpec


@dataclass
class StaticShapes:
    specs: list[InputSpec]
    origins: dict[str, list[str]] = field(default_factory=dict)  # input -> where each dimension came from

    @property
    def shapes(self) -> dict[str, list[int]]:
        return {s.name: [int(d) for d in s.shape] for s in self.specs}

    def to_dict(self) -> dict[str, Any]:
        return {s.name: {"shape": [int(d) for d in s.shape], "from": self.origins.get(s.name, [])} for s in self.specs}

    def describe(self) -> str:
        return "; ".join(f"{s.name} {graph.format_shape(s.shape)}" for s in self.specs)


def _image_size(config: dict) -> tuple[int, int] | None:
    size = config.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return int(size[0]), int(size[1])
    return None


def _default(spec: InputSpec, dim: int, source_kind: str, modality: str, config: dict, sequence_length: int) -> tuple[int, str] | None:
    """(value, where it came from) for a free dimension, or None when the task gives no default."""
    if source_kind != "huggingface":
        return None
    if dim == 0:
        return 1, "batch 1 (default)"
    rank = len(spec.shape)
    if modality == "text" and rank == 2 and dim == 1 and np.issubdtype(spec.dtype, np.integer):
        limit = config.get("max_position_embeddings")
        if isinstance(limit, int) and 0 < limit < sequence_length:
            return limit, f"max_position_embeddings {limit} (config; the profile asks {sequence_length})"
        return sequence_length, f"sequence length {sequence_length} (profile)"
    if modality == "image" and rank == 4 and spec.dtype.kind == "f":
        size = _image_size(config)
        channels = config.get("num_channels", 3)
        if dim == 1 and isinstance(channels, int) and channels > 0:
            return channels, f"num_channels {channels} (config)"
        if dim in (2, 3) and size is not None:
            return size[dim - 2], f"image_size {size[dim - 2]} (config)"
    return None


def resolve(specs: list[InputSpec], target: str, source_kind: str, modality: str, config: dict, sequence_length: int,
            given: set[str] | frozenset[str] = frozenset(), sampled: Mapping[str, tuple[int, ...]] | None = None
            ) -> StaticShapes:
    """Every dimension of every input fixed (rules 1-3). `given`: inputs whose shape came from --shape; `sampled`:
    shapes the task family's samples all have (rule 6)."""
    sampled = {k: v for k, v in (sampled or {}).items() if k not in given}
    specs = graph.resolve_shapes(specs, sampled) if sampled else specs
    fixed, origins, missing = [], {}, []
    for spec in specs:
        dims, where = [], []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
                where.append("--shape" if spec.name in given else "the samples (task family)" if spec.name in sampled
                             else "fixed in the model")
                continue
            found = _default(spec, i, source_kind, modality, config, sequence_length)
            if found is None:
                missing.append((spec, i, d))
                dims.append(None)
                where.append("")
            else:
                dims.append(found[0])
                where.append(found[1])
        fixed.append(InputSpec(spec.name, spec.dtype, tuple(dims)))
        origins[spec.name] = where
    if missing:
        spec, i, d = missing[0]
        example = ",".join(str(v) if isinstance(v, int) else "N" for v in next(s for s in fixed if s.name == spec.name).shape)
        others = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"target {target} needs static shapes: input '{spec.name}' {graph.format_shape(spec.shape)} dim {i} "
                         f"({d or '?'}) has no default{others}; fix it with --shape {spec.name}={example}")
    return StaticShapes(fixed, origins)


def write_static_onnx(src: Path, dst: Path, static: StaticShapes) -> Path:
    """The ONNX graph with the static shapes written into its inputs (rule 4)."""
    model = graph.apply_shapes(graph.load(src), static.specs)
    graph.onnx.save(model, str(dst))
    return dst


def check_ir_static(model: Any, target: str) -> None:
    """Rule 5: every input and output of the OpenVINO model has a static shape."""
    dynamic = [f"{kind} {next(iter(port.get_names()), '?')} {port.get_partial_shape()}"
               for kind, ports in (("input", model.inputs), ("output", model.outputs))
               for port in ports if port.get_partial_shape().is_dynamic]
    if dynamic:
        raise InternalError(f"target {target}: the IR still has dynamic shapes ({'; '.join(dynamic)}); the device would refuse it")
