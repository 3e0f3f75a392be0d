"""Facts about an ONNX graph that the pipeline needs, and the one edit it makes to inputs.

1. `input_specs` lists each graph input with its numpy dtype and shape; a free dimension is a string
   (its symbolic name) or `None` (anonymous).
2. `apply_shapes` turns the free dimensions named by `--shape` into fixed ones. A `--shape` for an
   unknown input, with the wrong rank, or contradicting a fixed dimension is a usage error.
3. `require_static` fails, naming every input and its free dimensions, when any remain.
4. `producers`, `consumers` and `remove_unread`: the node maps and the clean-up every graph rewrite uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper

from .errors import UsageError

Dim = int | str | None


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def free_dims(self) -> list[tuple[int, Dim]]:
        return [(i, d) for i, d in enumerate(self.shape) if not isinstance(d, int)]

    def describe_free(self) -> str:
        dims = ", ".join(f"dim {i} ({d or '?'})" for i, d in self.free_dims)
        return f"{self.name} {format_shape(self.shape)}: {dims}"


def format_shape(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


_FLOAT_TENSORS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


_STATE_SUFFIXES = ("_out", "out", "_new", "n", "_next", "next", ".1", "_1")


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim)


def state_pairs(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(input, output) pairs of a model whose state is fed back: a float input and an output of the same element type
    and shape whose name is the input's with a suffix (`state` -> `stateN`, `state_out`, `h` -> `hn`), or with `in`
    read as `out` (`state_in` -> `state_out`). Each input pairs with at most one output."""
    outputs = {o.name.lower(): o for o in model.graph.output}  # names compared without case: `stateN`
    pairs = []
    for i in model.graph.input:
        if i.type.tensor_type.elem_type not in _FLOAT_TENSORS or not _dims(i):
            continue
        low = i.name.lower()
        names = [low + suffix for suffix in _STATE_SUFFIXES]
        names += [low.replace("_in", "_out"), low.replace("in_", "out_"), low.replace("input", "output")]
        found = [outputs[n].name for n in dict.fromkeys(names) if n != low and n in outputs
                 and outputs[n].type.tensor_type.elem_type == i.type.tensor_type.elem_type and _dims(outputs[n]) == _dims(i)]
        if len(found) == 1:
            pairs.append((i.name, found[0]))
    return pairs


# Larger magnitudes are not data or weights: calibration cannot scale them (an INT8 range of 3e38 overflows), and a
# float32 overflows at 3.4e38 (data._check_values, bad_weight).
LARGEST_VALUE = 1e30


def bad_weight(model: onnx.ModelProto, largest: float = LARGEST_VALUE) -> str | None:
    """The first float weight (an initializer held in the file) that is NaN, infinite or beyond `largest` in
    magnitude, as `name[index] = value`; None when every one is sound (issue 17: such a weight makes calibration
    and its scales meaningless)."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.data_type not in _FLOAT_TENSORS or init.data_location == onnx.TensorProto.EXTERNAL:
            continue
        values = numpy_helper.to_array(init)
        bad = ~np.isfinite(values) | (np.abs(values.astype(np.float64)) > largest)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0]) if values.ndim else ()
            return f"{init.name}{list(where) if where else ''} = {values[where].item() if where else values.item()!r}"
    return None


def load(path: Path | str, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning every way it can be unreadable into one usage error.

    External-data paths and declared sizes are checked (`safety.check_onnx`) before any data is read.
    """
    from .safety import check_onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ValueError ... depending on damage
        raise UsageError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from exc
    if not model.graph.node and not model.graph.input:
        raise UsageError(f"{path}: not a readable ONNX model (empty file or no graph)")
    if not model.graph.output:
        raise UsageError(f"{path}: not a usable ONNX model (the graph has no outputs)")
    check_onnx(model, Path(path))  # external data inside the folder, sizes under the limit: before reading any data
    if load_external_data:
        try:
            onnx.load_external_data_for_model(model, str(Path(path).parent))
        except Exception as exc:
            raise UsageError(f"{path}: its external data cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'missing file'})") from exc
    return model


def ir_input_specs(xml: Path | str) -> tuple[list[InputSpec], list[str]]:
    """(input specs, output names) of an OpenVINO IR, after `safety.check_ir` (its `.bin` present and whole)."""
    import openvino as ov

    from .safety import check_ir

    check_ir(Path(xml))
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        raise UsageError(f"{xml}: OpenVINO cannot read it ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
    specs = []
    for item in model.inputs:
        dims = tuple(d.get_length() if d.is_static else None for d in item.get_partial_shape())
        specs.append(InputSpec(item.get_any_name(), np.dtype(item.get_element_type().to_dtype()), dims))
    return specs, [o.get_any_name() for o in model.outputs]


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:  # old exporters list weights as inputs
            continue
        tensor = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"input '{value.name}' has no tensor type edgekit can feed (element type {tensor.elem_type}); "
                             "is the model complete?") from None
        dims: list[Dim] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        specs.append(InputSpec(value.name, dtype, tuple(dims)))
    return specs


def output_dims(model: onnx.ModelProto) -> list[tuple[int | str | None, ...]]:
    """Each graph output's dimensions as declared: an int, a symbolic name, or None when unnamed."""
    return [tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                  for d in o.type.tensor_type.shape.dim) for o in model.graph.output]


def opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def all_nodes(graph: onnx.GraphProto):
    """Every node of a graph and of its subgraphs (the branches of `If`, the bodies of `Loop`), depth first."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from all_nodes(sub)


def count_ops(graph: onnx.GraphProto, op_type: str) -> int:
    return sum(1 for node in all_nodes(graph) if node.op_type == op_type)


def op_types(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Each tensor name -> the node that outputs it."""
    return {o: n for n in model.graph.node for o in n.output}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Each tensor name -> the nodes that read it, in graph order."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def remove_unread(model: onnx.ModelProto, op_types: Sequence[str]) -> None:
    """Remove the nodes of `op_types` whose output nothing reads (no node, no graph output), in that order
    (e.g. DequantizeLinear, then the QuantizeLinear that fed it)."""
    for op in op_types:
        read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        for node in [n for n in model.graph.node if n.op_type == op and n.output[0] not in read]:
            model.graph.node.remove(node)


# Operators an index passes through unchanged in value on its way to the table it indexes.
INDEX_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice", "Transpose"}


def index_limits(model: onnx.ModelProto) -> dict[str, int]:
    """For each integer graph input that indexes a table the graph holds (a Gather whose data is an
    initializer, through casts and reshapes), the table's row count: its values must lie in [0, rows).
    An input that indexes several tables gets the smallest count. Inputs the graph says nothing about are absent."""
    tables = {i.name: list(i.dims) for i in model.graph.initializer}
    readers = consumers(model)
    limits: dict[str, int] = {}
    for spec in model.graph.input:
        if spec.type.tensor_type.elem_type not in INTEGER_ELEMENT_TYPES:
            continue
        frontier, seen = [spec.name], set()
        while frontier:
            tensor = frontier.pop()
            seen.add(tensor)
            for node in readers.get(tensor, []):
                if node.op_type in INDEX_PASS_THROUGH and node.input and node.input[0] == tensor:
                    frontier += [o for o in node.output if o not in seen]
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor and node.input[0] in tables:
                    dims = tables[node.input[0]]
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                        limits[spec.name] = min(limits.get(spec.name, dims[axis]), int(dims[axis]))
    return limits


INTEGER_ELEMENT_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                         onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def looks_like_transformer(model: onnx.ModelProto) -> bool:
    ops = op_types(model)
    return "Softmax" in ops and "MatMul" in ops and "Conv" not in ops


def parse_shape_option(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=D1,D2,...` -> (name, dims)."""
    name, sep, dims = text.partition("=")
    if not sep or not name or not dims:
        raise UsageError(f"--shape '{text}': expected NAME=D1,D2,... (e.g. --shape pixel_values=1,3,224,224)")
    try:
        values = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise UsageError(f"--shape '{text}': dimensions must be positive integers separated by commas") from None
    if any(v <= 0 for v in values):
        raise UsageError(f"--shape '{text}': dimensions must be positive integers")
    return name.strip(), values


def resolve_shapes(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]]) -> list[InputSpec]:
    by_name = {s.name: s for s in specs}
    for name, dims in shapes.items():
        if name not in by_name:
            raise UsageError(f"--shape {name}=...: the model has no input '{name}' (inputs: {', '.join(by_name)})")
        spec = by_name[name]
        if len(dims) != len(spec.shape):
            raise UsageError(f"--shape {name}=...: input '{name}' has rank {len(spec.shape)} {format_shape(spec.shape)}, got {len(dims)} dimensions")
        for i, (given, have) in enumerate(zip(dims, spec.shape)):
            if isinstance(have, int) and have != given:
                raise UsageError(f"--shape {name}=...: dimension {i} of '{name}' is fixed at {have}, got {given}")
    return [InputSpec(s.name, s.dtype, tuple(shapes[s.name]) if s.name in shapes else s.shape) for s in specs]


def require_static(specs: list[InputSpec]) -> None:
    free = [s for s in specs if s.free_dims]
    if free:
        example = " ".join(f"--shape {s.name}={','.join(str(d) if isinstance(d, int) else '1' if i == 0 else 'N' for i, d in enumerate(s.shape))}" for s in free)
        raise UsageError("inputs have free dimensions; fix them with --shape: " + "; ".join(s.describe_free() for s in free) + f" (e.g. {example})")


def apply_shapes(model: onnx.ModelProto, specs: list[InputSpec]) -> onnx.ModelProto:
    """Write the fixed dimensions of `specs` into the graph's inputs (in place) and re-infer shapes."""
    by_name = {s.name: s for s in specs}
    changed = False
    for value in model.graph.input:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape):
            if isinstance(want, int) and not (dim.HasField("dim_value") and dim.dim_value == want):
                dim.Clear()
                dim.dim_value = want
                changed = True
    if changed:
        # Intermediate value_info may hold stale symbolic shapes; drop and re-infer.
        del model.graph.value_info[:]
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # inference is an optimisation hint only; runtimes re-derive shapes
            pass
    return model
