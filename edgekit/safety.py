"""Checks that keep an untrusted model or input file from being turned against the build.

1. Remote code: a Hugging Face folder whose config asks for custom code (`auto_map`, or Python files
   beside it that a config names) is refused unless the caller passes `trust_remote_code=True`; the
   message names the Python files that would run.
2. Pickled weights: when a folder has safetensors they are used; pickle-only weights (`.bin`, `.pt`,
   `.pth`, `.ckpt`) are first opened with PyTorch's restricted loader (`weights_only=True`), and a
   file it rejects is refused with the loader's reason. Nothing in a rejected pickle runs.
3. ONNX external data: every initializer's external-data `location` must be relative, free of `..`,
   and resolve (through links) inside the model's folder. Checked on the protobuf alone, before any
   data is read.
4. ONNX sizes: the bytes the initializers declare (and fixed-shape inputs need) must stay under
   `EDGEKIT_MAX_MODEL_BYTES` (default: the machine's available memory).
5. Images: the declared pixel count must stay under `EDGEKIT_MAX_IMAGE_PIXELS` (default: Pillow's
   `Image.MAX_IMAGE_PIXELS`). Text data: no line longer than `EDGEKIT_MAX_LINE_BYTES` (default 1 MiB).
6. ONNX structure: every node input is provided and the graph has no cycle (before a runtime sees it).
7. Input shapes fixed by `--shape`: the samples a compile holds must fit in `EDGEKIT_MAX_INPUT_BYTES`
   (default: a quarter of available memory).
8. OpenVINO IR: the `.xml` parses and its `.bin` is present and long enough for every constant.
9. Bundles: no path named by a manifest, `runtime.json` or the bundle layout may leave the bundle.
Every refusal is a `UsageError` (exit 2) with the figure or the file that tripped it.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from .errors import UsageError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
DEFAULT_MAX_LINE_BYTES = 1 << 20


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name}={text!r}: expected a whole number of bytes/pixels") from None
    if value <= 0:
        raise UsageError(f"{name}={text!r}: must be positive")
    return value


def max_model_bytes() -> int:
    import psutil

    return _env_int("EDGEKIT_MAX_MODEL_BYTES", int(psutil.virtual_memory().available))


def max_line_bytes() -> int:
    return _env_int("EDGEKIT_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES)


def max_input_bytes() -> int:
    """Memory the inputs of one compile may take: a quarter of what is available, leaving room for the
    runtimes' activations and outputs (or EDGEKIT_MAX_INPUT_BYTES)."""
    import psutil

    return _env_int("EDGEKIT_MAX_INPUT_BYTES", int(psutil.virtual_memory().available) // 4)


def max_image_pixels() -> int:
    from PIL import Image

    return _env_int("EDGEKIT_MAX_IMAGE_PIXELS", int(Image.MAX_IMAGE_PIXELS or 0) or (1 << 62))


# ---------------------------------------------------------------- Hugging Face folders

def remote_code_files(folder: Path, config: dict) -> list[str] | None:
    """The Python files custom code would run from, or None when the model needs no custom code."""
    needs = bool(config.get("auto_map")) or bool(config.get("custom_pipelines"))
    for extra in ("tokenizer_config.json", "preprocessor_config.json", "processor_config.json"):
        path = folder / extra
        if path.is_file() and '"auto_map"' in path.read_text(errors="replace"):
            needs = True
    if not needs:
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.py") if p.is_file())


def check_remote_code(folder: Path, config: dict, location: str, trust: bool) -> None:
    files = remote_code_files(folder, config)
    if files is None or trust:
        return
    listed = ", ".join(files) if files else "none in the folder: they would be fetched from the hub"
    raise UsageError(f"{location}: the model needs custom Python code (auto_map in its config; files that would run: {listed}); "
                     "review them and pass --trust-remote-code to run them")


def weights_format(folder: Path) -> str | None:
    """"safetensors" when the folder has any, "pickle" when it has only pickled weights, else None."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return "safetensors"
    if any(p.suffix in PICKLE_SUFFIXES and not p.name.startswith("training_args") for p in files):
        return "pickle"
    return None


def check_pickles(folder: Path) -> None:
    """Open every pickled weight file with the restricted loader; refuse the first it rejects."""
    import torch

    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES):
        if path.name.startswith("training_args"):
            continue
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as exc:  # UnpicklingError, RuntimeError ... : the reason is in the message
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise UsageError(f"{path}: pickled weights refused by PyTorch's restricted loader (weights_only=True): {reason}") from None


# ---------------------------------------------------------------- ONNX

def _escapes(location: str, base: Path) -> str | None:
    """Why `location` is not a safe external-data path relative to `base`, or None when it is."""
    if not location:
        return "an empty location"
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive:
        return "an absolute path"
    if ".." in PurePosixPath(location.replace("\\", "/")).parts:
        return "a '..' component"
    root = base.resolve()
    target = (base / location).resolve()
    if target != root and root not in target.parents:
        return f"a path that resolves outside the model folder ({target})"
    return None


def _tensors(graph):
    yield from graph.initializer
    yield from graph.sparse_initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _all_tensors(model):
    for tensor in _tensors(model.graph):
        if hasattr(tensor, "values"):  # SparseTensorProto
            yield tensor.values
            yield tensor.indices
        else:
            yield tensor
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t


def check_external_data(model, path: Path) -> None:
    """Refuse external-data locations that leave the model's folder (protobuf only, no data read)."""
    base = Path(path).parent
    for tensor in _all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                why = _escapes(entry.value, base)
                if why:
                    raise UsageError(f"{path}: tensor '{tensor.name}' keeps its data at {entry.value!r}, {why}; "
                                     "external data must stay inside the model's folder")


def declared_bytes(model) -> int:
    """Bytes the initializers declare (product of dims x element size) plus fixed-shape inputs."""
    from onnx import helper

    def itemsize(elem_type: int) -> int:
        try:
            return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
        except Exception:
            return 1

    total = 0
    for tensor in _all_tensors(model):
        count = 1
        for d in tensor.dims:
            count *= max(int(d), 0)
        total += count * itemsize(tensor.data_type)
    for value in model.graph.input:
        t = value.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            count = 1
            for d in dims:
                count *= max(int(d), 0)
            total += count * itemsize(t.elem_type)
    return total


def check_onnx_sizes(model, path: Path) -> None:
    need, limit = declared_bytes(model), max_model_bytes()
    if need > limit:
        raise UsageError(f"{path}: the graph declares {need:,} bytes of weights and inputs, over the limit of {limit:,} bytes "
                         "(available memory, or EDGEKIT_MAX_MODEL_BYTES)")


def check_graph_structure(model, path: Path) -> None:
    """Every node input is provided (a graph input, an initializer or a node output) and the nodes form no
    cycle: checked on the protobuf, so a malformed graph is refused before any runtime sees it."""
    g = model.graph
    provided = {v.name for v in g.input} | {t.name for t in g.initializer} | {""}
    provided |= {t.values.name for t in g.sparse_initializer}
    producer: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for name in node.output:
            if name:
                producer[name] = i
    for node in g.node:
        for name in node.input:
            if name not in provided and name not in producer:
                raise UsageError(f"{path}: node '{node.name or node.op_type}' ({node.op_type}) reads '{name}', which no graph "
                                 "input, initializer or node provides (a dangling input); the file is incomplete or corrupt")
    for value in g.output:
        if value.name not in provided and value.name not in producer:
            raise UsageError(f"{path}: graph output '{value.name}' is produced by no node; the file is incomplete or corrupt")
    # Kahn's algorithm over the nodes: whatever is left unordered lies on (or behind) a cycle.
    users: dict[int, list[int]] = {}
    waiting = [0] * len(g.node)
    for i, node in enumerate(g.node):
        for j in {producer[n] for n in node.input if n in producer and n not in provided}:
            users.setdefault(j, []).append(i)
            waiting[i] += 1
    ready = [i for i, count in enumerate(waiting) if count == 0]
    done = 0
    while ready:
        i = ready.pop()
        done += 1
        for k in users.get(i, ()):
            waiting[k] -= 1
            if waiting[k] == 0:
                ready.append(k)
    if done < len(g.node):
        stuck = next(g.node[i] for i, count in enumerate(waiting) if count > 0)
        raise UsageError(f"{path}: the graph has a cycle ({len(g.node) - done} nodes, e.g. '{stuck.name or stuck.op_type}' "
                         f"({stuck.op_type}), depend on their own outputs); an ONNX graph must be acyclic")


def check_onnx(model, path: Path) -> None:
    """Rules 3 and 4, and the graph's structure, on a model loaded with `load_external_data=False`."""
    check_external_data(model, path)
    check_onnx_sizes(model, path)
    check_graph_structure(model, path)


def check_input_bytes(specs, copies: int, what: str = "--shape") -> None:
    """Refuse fixed input shapes whose `copies` samples would not fit in memory, before any is made."""
    per_sample = 0
    for spec in specs:
        if any(not isinstance(d, int) for d in spec.shape):
            continue  # a free dimension is sized by the data itself (text length is capped)
        count = 1
        for d in spec.shape:
            count *= int(d)
        per_sample += count * np.dtype(spec.dtype).itemsize
    need, limit = per_sample * copies, max_input_bytes()
    if need > limit:
        shapes = ", ".join(f"{s.name} {list(s.shape)}" for s in specs)
        raise UsageError(f"{what}: inputs {shapes} take {per_sample:,} bytes a sample, {need:,} bytes for the {copies} samples "
                         f"needed, over the limit of {limit:,} bytes (a quarter of available memory, or EDGEKIT_MAX_INPUT_BYTES); "
                         "give smaller shapes")


# ---------------------------------------------------------------- OpenVINO IR

def check_ir(xml: Path) -> None:
    """An IR `.xml` is readable XML and its `.bin` holds every constant the `.xml` points into."""
    import xml.etree.ElementTree as ET

    xml = Path(xml)
    if not xml.is_file():
        raise UsageError(f"{xml}: no such OpenVINO IR file")
    need = 0
    try:
        for _, element in ET.iterparse(xml, events=("end",)):
            if element.tag == "data" and "offset" in element.attrib and "size" in element.attrib:
                need = max(need, int(element.attrib["offset"]) + int(element.attrib["size"]))
            elif element.tag == "layer":
                element.clear()
    except (ET.ParseError, ValueError) as exc:
        raise UsageError(f"{xml}: not a readable OpenVINO IR ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if need == 0:
        return
    weights = xml.with_suffix(".bin")
    if not weights.is_file():
        raise UsageError(f"{xml}: its weights file {weights.name} is missing (the IR reads {need:,} bytes of constants from it); "
                         "keep the .xml and .bin together")
    have = weights.stat().st_size
    if have < need:
        raise UsageError(f"{xml}: {weights.name} holds {have:,} bytes but the IR reads up to byte {need:,}; the .bin is "
                         "truncated or belongs to another model")


# ---------------------------------------------------------------- bundles

def inside_bundle(root: Path, relative: Any, named_in: str = "manifest.json") -> Path:
    """`root / relative`, refusing a path that is absolute, has a `..` part or resolves outside `root`
    (through a symlink too). `named_in` is the file that named the path, for the message."""
    where = root / named_in
    if not isinstance(relative, str) or not relative:
        raise UsageError(f"{where}: a file entry has no path")
    posix = PurePosixPath(relative)
    if posix.is_absolute() or Path(relative).is_absolute() or "\\" in relative or ".." in posix.parts:
        raise UsageError(f"{where}: path '{relative}' leaves the bundle; refusing to follow it")
    path = root.joinpath(*posix.parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise UsageError(f"{where}: path '{relative}' resolves outside the bundle (a symlink); refusing to follow it")
    return path


# ---------------------------------------------------------------- data files

def check_image_size(image, path: Path) -> None:
    width, height = image.size
    limit = max_image_pixels()
    if width * height > limit:
        raise UsageError(f"{path}: image declares {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                         "(EDGEKIT_MAX_IMAGE_PIXELS)")


def read_text_bounded(path: Path, encoding: str = "utf-8") -> str:
    """The file's text, refusing any line longer than the limit before reading the rest of it."""
    limit = max_line_bytes()
    chunks = []
    with open(path, "rb") as fh:
        number = 0
        while True:
            line = fh.readline(limit + 1)
            if not line:
                break
            number += 1
            if len(line) > limit and not (len(line) == limit + 1 and line.endswith(b"\n")):
                raise UsageError(f"{path}: line {number} is longer than {limit:,} bytes (EDGEKIT_MAX_LINE_BYTES); "
                                 "data files hold one sample a line")
            chunks.append(line)
    return b"".join(chunks).decode(encoding)
