"""Fold a graph's shape arithmetic into constants wherever the shapes it reads are fixed.

Exporters write dimensions as computations: `Shape -> Gather -> Unsqueeze -> Concat -> Reshape` to split
heads, `Shape -> Slice -> Cast -> Sqrt -> Div` for an attention scale. ONNX Runtime folds only nodes whose
inputs are all constant, and a `Shape` of a tensor with a dynamic batch or sequence axis is not, so these
chains run on every inference (all-MiniLM-L6-v2: 86 of its 364 nodes once quantised), and the scalar `Mul`s
they feed cannot be folded into the MatMuls after them.

Rules:
1. Sizes come from ONNX shape inference, run from the graph's inputs and initializers (shapes the file
   already records are not trusted). A `Shape` element is a constant only where inference gives the
   axis a fixed size; a dynamic axis stays symbolic (a `Dim`: that axis of that tensor).
2. `Shape` values are followed through `Gather`, `Slice` (step 1), `Unsqueeze`, `Squeeze`, `Concat`,
   `Reshape` (flattening) and integer `Cast`; `Equal(size, -1)` is decided (a size is never negative) and
   so is a `Where` on a decided condition. A value whose elements are all constant becomes an initializer.
3. A `Reshape` whose target is still dynamic gets a constant one where each dynamic element j is the
   size of an axis with the same origin as axis j of the `Reshape`'s own input: it becomes 0 ("copy
   axis j"). Origins are traced through shape-preserving, broadcasting (an input of size 1 aside),
   `MatMul`, `Transpose`, `Reshape`, `Gather`, `Unsqueeze`, `Squeeze`, `Slice` (unsliced axes) and
   `Expand` nodes back to a graph input's named axis (inputs that share a dimension name share its size,
   as ONNX defines); anything else is its own origin. One remaining dynamic element becomes -1 when the
   target has none. `allowzero=1` reshapes stay as built.
4. Any other node whose inputs are now all constant is evaluated (ONNX's reference implementation) when it
   is a deterministic operator and its output is small (at most `MAX_FOLDED_ELEMENTS` elements); larger
   results stay computed, so the file does not grow.
5. The graph's inputs, outputs and every value they compute are unchanged; nodes left unread are removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .base import StepInput, StepResult, step

log = logging.getLogger(__name__)

MAX_FOLDED_ELEMENTS = 4096
FOLDABLE = frozenset({"Cast", "Sqrt", "Div", "Mul", "Add", "Sub", "Pow", "Neg", "Reciprocal", "Unsqueeze", "Squeeze",
                      "Concat", "Gather", "Slice", "Reshape", "Equal", "Less", "Greater", "Where", "Not", "And", "Or",
                      "ConstantOfShape", "Range", "Expand", "Size", "Identity", "Floor", "Ceil", "Min", "Max",
                      "Abs", "ReduceProd", "Transpose", "Flatten", "Tile", "Exp", "Log"})
INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
# Operators whose first output has the shape of their first input, and elementwise broadcasting operators (rule 3).
SAME_SHAPE = frozenset({"Cast", "Relu", "Gelu", "Erf", "Tanh", "Sigmoid", "Sqrt", "Exp", "Log", "Neg", "Abs", "Softmax",
                        "LogSoftmax", "LayerNormalization", "QuantizeLinear", "DequantizeLinear", "Identity", "Dropout",
                        "Clip", "Not", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "LeakyRelu", "Elu", "Selu",
                        "Softplus", "Softsign", "HardSigmoid", "HardSwish", "Mish", "IsNaN", "CastLike"})
BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                       "And", "Or", "Xor", "Where", "Max", "Min", "Mod", "BitShift", "PRelu"})


@dataclass(frozen=True)
class Dim:
    """The size of axis `axis` of tensor `tensor`, not known before the graph runs."""

    tensor: str
    axis: int


@dataclass
class FoldResult:
    path: Path | None = None  # the graph to use: the folded copy, or the source when nothing folded
    folded: int = 0  # nodes replaced by constants
    reshapes: int = 0  # reshape targets made constant (rule 3)
    removed: int = 0  # nodes removed in all
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.folded or self.reshapes)

    def describe(self) -> str:
        """The settings line: what folding changed."""
        return (f"{self.folded} shape computations folded into constants, {self.reshapes} reshape targets made "
                f"constant, {self.removed} nodes removed")


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Every tensor's inferred dims, from the graph's inputs and initializers alone: `value_info` already in
    the file is dropped first (an exporter's traced shapes can be stale where an axis is dynamic)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=False, data_prop=True)
    shapes: dict[str, list[int | str | None]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = value.type.tensor_type
        if t.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return shapes


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Folder:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.shapes = _shapes(model)
        self.inputs = {i.name for i in model.graph.input}
        self.initializer_dims = {i.name: list(i.dims) for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.origins: dict[tuple[str, int], tuple] = {}
        self.const: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
                                             if i.data_location != onnx.TensorProto.EXTERNAL and _small(i.dims)}
        self.symbolic: dict[str, tuple[list, int]] = {}  # shape values with Dim elements, and their rank (rule 2)
        self.new_constants: dict[str, np.ndarray] = {}
        self.result = FoldResult()

    # -- rule 2: follow shape values ------------------------------------------------------------------
    def _values(self, name: str) -> tuple[list, int] | None:
        """A shape value: its elements (ints and Dims) and its rank (0 or 1)."""
        if name in self.symbolic:
            return self.symbolic[name]
        value = self.const.get(name)
        if value is not None and value.dtype.kind == "i" and value.ndim <= 1:
            return [int(v) for v in value.reshape(-1)], value.ndim
        return None

    def _shape_node(self, node: onnx.NodeProto) -> tuple[list, int] | None:
        dims = self._dims(node.input[0])
        if dims is None:
            return None
        rank = len(dims)
        start, end = _attribute(node, "start", 0), _attribute(node, "end", rank)
        start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
        start, end = max(0, min(start, rank)), max(0, min(end, rank))
        return [d if isinstance(d, int) and d > 0 else Dim(node.input[0], axis)
                for axis, d in zip(range(start, end), dims[start:end])], 1

    def _follow(self, node: onnx.NodeProto) -> tuple[list, int] | np.ndarray | None:
        """The shape value `node` computes from shape values (rule 2), a decided comparison (a constant
        array), or None where the rule does not follow it."""
        op = node.op_type
        if op == "Shape":
            return self._shape_node(node)
        if op == "Where":
            return self._where(node)
        found = self._values(node.input[0]) if node.input else None
        if found is None:
            return None
        values, rank = found
        if op == "Gather":
            index = self.const.get(node.input[1])
            if rank != 1 or index is None or index.ndim > 1 or _attribute(node, "axis", 0) != 0:
                return None
            if any(not -len(values) <= int(i) < len(values) for i in index.reshape(-1)):
                return None  # out of range: the runtime says so, not the fold
            return [values[int(i)] for i in index.reshape(-1)], index.ndim
        if op == "Slice":
            ins = [self.const.get(n) if n else None for n in node.input[1:]]
            if rank != 1 or any(n and v is None for n, v in zip(node.input[1:], ins)) or len(ins) < 2:
                return None
            axes = ins[2] if len(ins) > 2 and ins[2] is not None else np.array([0])
            steps = ins[3] if len(ins) > 3 and ins[3] is not None else np.array([1])
            if axes.size != 1 or int(axes.reshape(-1)[0]) not in (0, -1):
                return None
            start, stop, step = (int(ins[0].reshape(-1)[0]), int(ins[1].reshape(-1)[0]), int(steps.reshape(-1)[0]))
            if step != 1:  # Python's and ONNX's clamping agree for step 1 (what exporters write for shapes)
                return None
            return values[slice(start, stop)], 1
        if op == "Unsqueeze":
            axes = self.const.get(node.input[1]) if len(node.input) > 1 else np.array(_attribute(node, "axes", []))
            return (values, 1) if rank == 0 and axes is not None and list(axes.reshape(-1)) in ([0], [-1]) else None
        if op == "Squeeze":
            return (values, 0) if rank == 1 and len(values) == 1 else None
        if op == "Identity" or (op == "Cast" and _attribute(node, "to") in INTEGER_TYPES):
            return values, rank
        if op == "Concat" and _attribute(node, "axis", 0) in (0, -1):
            parts = [self._values(n) for n in node.input]
            if any(p is None or p[1] != 1 for p in parts):
                return None
            return [v for p in parts for v in p[0]], 1
        if op == "Reshape":  # a shape value flattened: [-1] or its own length
            target = self.const.get(node.input[1])
            return (values, 1) if target is not None and list(target.reshape(-1)) in ([-1], [len(values)]) else None
        if op == "Equal":  # sizes are never negative: `Dim == -1` is false (exporters test for -1)
            other = self._values(node.input[1])
            if other is None or len(other[0]) not in (1, len(values)) or rank != 1:
                return None
            right = other[0] * len(values) if len(other[0]) == 1 else other[0]
            decided = [a == b if isinstance(a, int) and isinstance(b, int) else
                       False if (isinstance(a, int) and a < 0) or (isinstance(b, int) and b < 0) else None
                       for a, b in zip(values, right)]
            return None if None in decided else np.array(decided, dtype=bool)
        return None

    def _where(self, node: onnx.NodeProto) -> tuple[list, int] | None:
        """`Where(condition, a, b)` of shape values, the condition known: the chosen elements."""
        condition = self.const.get(node.input[0])
        a, b = self._values(node.input[1]), self._values(node.input[2])
        if condition is None or a is None or b is None or condition.ndim != 1 or a[1] != 1 or b[1] != 1:
            return None
        n = condition.size
        if len(a[0]) not in (1, n) or len(b[0]) not in (1, n):
            return None
        pick = [(a[0][i % len(a[0])] if c else b[0][i % len(b[0])]) for i, c in enumerate(condition.reshape(-1))]
        return pick, 1

    # -- rule 3 -------------------------------------------------------------------------------------------
    def _origin(self, tensor: str, axis: int) -> tuple:
        """Where the size of `tensor`'s axis `axis` comes from: two axes with the same origin have the same
        size whatever the inputs. A graph input's named axis is its name; an axis no rule below traces is
        its own origin (equal only to itself)."""
        key = (tensor, axis)
        if key not in self.origins:
            self.origins[key] = self._trace(tensor, axis)
        return self.origins[key]

    def _trace(self, tensor: str, axis: int) -> tuple:
        own = ("axis", tensor, axis)
        dims = self._dims(tensor)
        if dims is None or not 0 <= axis < len(dims):
            return own
        if isinstance(dims[axis], int) and dims[axis] > 0:
            return ("size", dims[axis])
        if tensor in self.inputs:
            return ("param", dims[axis]) if isinstance(dims[axis], str) else own
        node = self.producer.get(tensor)
        if node is None or node.domain not in ("", "ai.onnx") or tensor != node.output[0]:
            return own
        op = node.op_type
        if op in SAME_SHAPE:
            return self._origin(node.input[0], axis)
        if op in BROADCAST:
            return self._broadcast([(n, axis - len(dims) + self._rank(n)) for n in node.input if n], own)
        tracer = _TRACERS.get(op)
        return tracer(self, node, axis, dims, own) if tracer is not None else own

    def _trace_matmul(self, node, axis: int, dims: list, own: tuple) -> tuple:
        a, b = node.input[0], node.input[1]
        ra, rb = self._rank(a), self._rank(b)
        if ra < 2 or rb < 2:
            return own
        if axis == len(dims) - 1:
            return self._origin(b, rb - 1)
        if axis == len(dims) - 2:
            return self._origin(a, ra - 2)
        return self._broadcast([(a, axis - len(dims) + ra), (b, axis - len(dims) + rb)], own)

    def _trace_transpose(self, node, axis: int, dims: list, own: tuple) -> tuple:
        perm = _attribute(node, "perm") or list(reversed(range(len(dims))))
        return self._origin(node.input[0], int(perm[axis]))

    def _trace_reshape(self, node, axis: int, dims: list, own: tuple) -> tuple:
        if _attribute(node, "allowzero", 0):
            return own
        target = self._values(node.input[1])
        if target is None or target[1] != 1 or axis >= len(target[0]):
            return own
        element = target[0][axis]
        if isinstance(element, Dim):
            return self._origin(element.tensor, element.axis)
        return self._origin(node.input[0], axis) if element == 0 else own

    def _trace_slice(self, node, axis: int, dims: list, own: tuple) -> tuple:
        """An axis a Slice does not slice keeps its size."""
        axes = self.const.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if axes is None:
            return own
        rank = self._rank(node.input[0])
        sliced = {int(a) + rank if a < 0 else int(a) for a in axes.reshape(-1)}
        return own if axis in sliced else self._origin(node.input[0], axis)

    def _trace_unsqueeze(self, node, axis: int, dims: list, own: tuple) -> tuple:
        axes = self._axes(node)
        if axes is None:
            return own
        added = {a + len(dims) if a < 0 else a for a in axes}
        return own if axis in added else self._origin(node.input[0], axis - sum(a < axis for a in added))

    def _trace_squeeze(self, node, axis: int, dims: list, own: tuple) -> tuple:
        axes = self._axes(node)
        if axes is None:
            return own
        rank = self._rank(node.input[0])
        for a in sorted(a + rank if a < 0 else a for a in axes):
            axis += a <= axis
        return self._origin(node.input[0], axis)

    def _trace_expand(self, node, axis: int, dims: list, own: tuple) -> tuple:
        target = self._values(node.input[1])
        if target is None or target[1] != 1:
            return own
        element = target[0][axis - len(dims) + len(target[0])] if axis - len(dims) + len(target[0]) >= 0 else 1
        axes = [(node.input[0], axis - len(dims) + self._rank(node.input[0]))]
        if isinstance(element, Dim):
            axes.append((element.tensor, element.axis))
        elif element != 1:
            return ("size", element)
        return self._broadcast(axes, own)

    def _trace_gather(self, node, axis: int, dims: list, own: tuple) -> tuple:
        at = _attribute(node, "axis", 0)
        at = at + self._rank(node.input[0]) if at < 0 else at
        ri = self._rank(node.input[1])
        if ri < 0 or at < 0:
            return own
        if axis < at:
            return self._origin(node.input[0], axis)
        if axis < at + ri:
            return self._origin(node.input[1], axis - at)
        return self._origin(node.input[0], axis - ri + 1)

    def _dims(self, tensor: str) -> list | None:
        if tensor in self.const:
            return list(self.const[tensor].shape)
        if tensor in self.initializer_dims:
            return self.initializer_dims[tensor]
        return self.shapes.get(tensor)

    def _rank(self, tensor: str) -> int:
        dims = self._dims(tensor)
        return -1 if dims is None else len(dims)

    def _axes(self, node: onnx.NodeProto) -> list[int] | None:
        if len(node.input) > 1 and node.input[1]:
            value = self.const.get(node.input[1])
            return None if value is None else [int(a) for a in value.reshape(-1)]
        axes = _attribute(node, "axes")
        return None if axes is None else [int(a) for a in axes]

    def _broadcast(self, axes: list[tuple[str, int]], own: tuple) -> tuple:
        """A broadcast axis: the origin every input shares, inputs of size 1 there (or without it) aside."""
        found = set()
        for tensor, axis in axes:
            rank = self._rank(tensor)
            if rank < 0:
                return own
            if axis < 0:
                continue
            origin = self._origin(tensor, axis)
            if origin != ("size", 1):
                found.add(origin)
        return found.pop() if len(found) == 1 else own

    def _reshape_target(self, node: onnx.NodeProto) -> np.ndarray | None:
        target, _ = self.symbolic.get(node.input[1], (None, 0))
        rank = self._rank(node.input[0])
        if target is None or rank < 0 or _attribute(node, "allowzero", 0):
            return None
        out: list[int | None] = []
        for j, v in enumerate(target):
            if isinstance(v, int):
                out.append(v)
            elif j < rank and self._origin(v.tensor, v.axis) == self._origin(node.input[0], j):
                out.append(0)
            else:
                out.append(None)
        if out.count(None) == 1 and -1 not in out:
            out[out.index(None)] = -1
        return None if None in out else np.array(out, dtype=np.int64)

    # -- rule 4 -------------------------------------------------------------------------------------------
    def _evaluate(self, node: onnx.NodeProto) -> list[np.ndarray] | None:
        from onnx.reference import ReferenceEvaluator

        names = [n for n in node.input if n]
        inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(self.const[n].dtype), None)
                  for n in names]
        outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
        body = onnx.helper.make_graph([node], "fold", inputs, outputs)
        opsets = [o for o in self.model.opset_import if o.domain in ("", "ai.onnx")]
        try:
            values = ReferenceEvaluator(onnx.helper.make_model(body, opset_imports=opsets)).run(
                None, {n: self.const[n] for n in names})
        except Exception:  # an operator the reference cannot run: it stays computed
            return None
        values = [np.asarray(v) for v in values]
        return values if all(v.size <= MAX_FOLDED_ELEMENTS for v in values) else None

    def _set_constant(self, name: str, value: np.ndarray) -> None:
        self.const[name] = value
        self.new_constants[name] = value

    def run(self) -> FoldResult:
        body = self.model.graph
        kept: list[onnx.NodeProto] = []
        for node in body.node:
            if node.domain not in ("", "ai.onnx"):
                kept.append(node)
                continue
            if node.op_type == "Constant":  # any of its forms (value, value_ints, value_float, ...)
                value = _attribute(node, "value")
                values = [numpy_helper.to_array(value)] if value is not None else self._evaluate(node)
                if values is not None:
                    self.const[node.output[0]] = values[0]
                kept.append(node)
                continue
            followed = (self._follow(node) if node.op_type == "Shape" or any(n in self.symbolic for n in node.input)
                        else None)
            if isinstance(followed, np.ndarray):  # a decided comparison
                self._set_constant(node.output[0], followed)
                self.result.folded += 1
                continue
            if followed is not None:
                values, rank = followed
                if all(isinstance(v, int) for v in values):
                    array = np.array(values, dtype=np.int64)
                    self._set_constant(node.output[0], array.reshape(()) if rank == 0 else array)
                    self.result.folded += 1
                    continue
                self.symbolic[node.output[0]] = (values, rank)
            if node.op_type == "Reshape" and node.input[1] not in self.const:
                target = self._reshape_target(node)
                if target is not None:
                    name = f"{node.output[0]}_shape"
                    self._set_constant(name, target)
                    node.input[1] = name
                    self.result.reshapes += 1
            if (node.op_type in FOLDABLE and node.input and all(node.output)
                    and all(n in self.const for n in node.input if n)):
                values = self._evaluate(node)
                if values is not None:
                    for name, value in zip(node.output, values):
                        self._set_constant(name, value)
                    self.result.folded += 1
                    continue
            kept.append(node)
        outputs = {o.name for o in body.output}
        for name, value in self.new_constants.items():
            if name in outputs:  # a graph output stays a node output
                kept.append(onnx.helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value)))
        before = len(body.node)
        del body.node[:]
        body.node.extend(kept)
        existing = {i.name for i in body.initializer}
        for name, value in self.new_constants.items():
            if name not in existing and name not in outputs:
                body.initializer.append(numpy_helper.from_array(value, name))
        _prune(body)
        self.result.removed = before - len(body.node)
        return self.result


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads, its subgraphs' reads of outer names included."""
    names = {n for n in node.input if n}
    for a in node.attribute:
        subgraphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for sub in subgraphs:
            for inner in sub.node:
                names |= _reads(inner)
    return names


def _prune(body: onnx.GraphProto) -> None:
    """Remove the nodes nothing reads (rule 5), then the initializers nothing reads."""
    read = {o.name for o in body.output}
    live = []
    for node in reversed(body.node):
        if any(o in read for o in node.output if o):
            live.append(node)
            read |= _reads(node)
    del body.node[:]
    body.node.extend(reversed(live))
    inputs = {i.name for i in body.input}
    unread = [i for i in body.initializer if i.name not in read and i.name not in inputs]
    for initializer in unread:
        body.initializer.remove(initializer)


def _small(dims) -> bool:
    return int(np.prod(dims)) <= MAX_FOLDED_ELEMENTS if len(dims) else True

# Where an axis of each operator's output comes from (beyond the same-shape and broadcasting operators).
_TRACERS = {"MatMul": _Folder._trace_matmul, "Transpose": _Folder._trace_transpose, "Reshape": _Folder._trace_reshape,
            "Slice": _Folder._trace_slice, "Unsqueeze": _Folder._trace_unsqueeze, "Squeeze": _Folder._trace_squeeze,
            "Expand": _Folder._trace_expand, "Gather": _Folder._trace_gather}


def fold_shapes(src: Path, dst: Path) -> FoldResult:
    """Fold `src`'s shape arithmetic into `dst`. When nothing folds, or the weights are external data (the
    copy would lose them), `dst` is not written and `result.path` is `src`."""
    model = onnx.load(str(src), load_external_data=False)
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer):
        return FoldResult(src, notes=["shape arithmetic not folded: the model keeps its weights in external data"])
    try:
        result = _Folder(model).run()
    except Exception as exc:  # an optimisation: a graph it cannot read is used as it is
        log.info("shape fold failed", exc_info=True)
        return FoldResult(src, notes=[f"shape arithmetic not folded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"])
    result.path = src
    if result.changed:
        onnx.save(model, str(dst))
        result.path = dst
    return result


@step("fold shapes")
def fold_shapes_step(inp: StepInput) -> StepResult:
    """The graph with its shape arithmetic folded into constants, in the work folder (the graph itself,
    unchanged, when nothing folds)."""
    folded = fold_shapes(inp.path, inp.work / "folded.onnx")
    return StepResult(folded.path, {"shape_arithmetic": folded.describe()} if folded.changed else {}, folded.notes)
