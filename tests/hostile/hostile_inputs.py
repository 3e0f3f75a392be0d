"""Builders for hostile inputs, made at test time (no hostile binaries are committed)."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def matmul_model(weights: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x @ W with x [1, 4]: the smallest model edgekit compiles."""
    w = np.arange(16, dtype=np.float32).reshape(4, 4) / 16 if weights is None else weights
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def external_data_model(folder: Path, location: str, name: str = "model.onnx") -> Path:
    """An ONNX file whose weight W lives in external data at `location` (written verbatim, not checked)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = matmul_model()
    path = folder / name
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(proto.SerializeToString())
    return path


def bomb_model(path: Path, dims=(1 << 20, 1 << 20)) -> Path:
    """A graph declaring a 2^40-element float initializer; its data file does not even exist."""
    model = matmul_model()
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="huge.bin")
    model.graph.initializer[0].CopyFrom(tensor)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A valid-looking PNG that declares width x height pixels but carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


class Payload:
    """Unpickling this (without the restricted loader) creates `marker`: proof that the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def copy_model(src: Path, dst: Path, weights: bool = True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and (weights or p.suffix != ".safetensors"):
            shutil.copy2(p, dst / p.name)
    return dst


def snapshot(root: Path) -> dict[str, int]:
    """Every file under `root` with its size: compare before and after to prove nothing was written."""
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}
