"""The floor: how fast a model could possibly run on this CPU.

1. `count_macs` counts the multiply-accumulates of every MatMul, Gemm and Conv of an ONNX graph at
   fixed input shapes (ONNX shape inference with data propagation resolves the intermediate shapes).
2. `isa_peaks` gives the CPU's theoretical peaks in MACs per second from its instruction set, core
   count and clock: AVX-512 FP32 (2 FMA ports x 16 lanes), AVX-512 VNNI INT8 (2 x 64), AMX INT8
   (1024 per cycle per core), AMX BF16 (512).
3. `measured_peaks` runs large matrix products on the runtimes (FP32 and INT8 QDQ on ONNX Runtime,
   INT8 on OpenVINO) and reports the best MAC rate reached: an achievable ceiling.
The floor latency of a model is MACs / peak; an artifact's efficiency is floor / measured latency.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _shape(value_info) -> list[int] | None:
    dims = value_info.type.tensor_type.shape.dim
    out = []
    for d in dims:
        if not d.HasField("dim_value"):
            return None
        out.append(d.dim_value)
    return out


def count_macs(model_path: Path, input_shapes: dict[str, list[int]]) -> tuple[int, int]:
    """(MACs, operators whose shape stayed unknown) at the given input shapes."""
    model = onnx.load(str(model_path))
    for value in model.graph.input:
        if value.name in input_shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, input_shapes[value.name]):
                dim.Clear()
                dim.dim_value = size
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: _shape(v) for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    macs, unknown = 0, 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        a = shapes.get(node.input[0])
        b = shapes.get(node.input[1])
        out = shapes.get(node.output[0])
        if node.op_type == "MatMul" and a and b:
            k = a[-1]
            n = b[-1]
            rows = int(np.prod(out[:-1])) if out else int(np.prod(a[:-1]))
            macs += rows * k * n
        elif node.op_type == "Gemm" and a and b:
            trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
            trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
            m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
            n = b[0] if trans_b else b[1]
            macs += m * k * n
        elif node.op_type == "Conv" and b and out:
            group = next((x.i for x in node.attribute if x.name == "group"), 1)
            macs += int(np.prod(out)) * (b[1]) * int(np.prod(b[2:])) // 1 * 1
            _ = group  # weight shape [Cout, Cin/group, kh, kw] already divides by group
        else:
            unknown += 1
    return macs, unknown


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return set(match.group(1).split()) if match else set()


def cpu_ghz() -> float:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M).group(1)) / 1000
    except (OSError, AttributeError):
        return 0.0


def isa_peaks(cores: int) -> dict[str, float]:
    """Theoretical MACs per second, by instruction set."""
    flags, ghz = cpu_flags(), cpu_ghz()
    per_cycle = {}
    if "avx512f" in flags:
        per_cycle["fp32 avx-512"] = 2 * 16
    elif "avx2" in flags:
        per_cycle["fp32 avx2"] = 2 * 8
    if "avx512_vnni" in flags:
        per_cycle["int8 avx-512 vnni"] = 2 * 64
    if "amx_int8" in flags:
        per_cycle["int8 amx"] = 1024
    if "amx_bf16" in flags:
        per_cycle["bf16 amx"] = 512
    return {name: macs * cores * ghz * 1e9 for name, macs in per_cycle.items()}


def _matmul_model(path: Path, m: int, k: int, n: int, int8: bool) -> Path:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm", [x], [y], [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    if not int8:
        return path
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self):
            self.items = [{"x": rng.standard_normal((m, k)).astype(np.float32)} for _ in range(4)]

        def get_next(self):
            return self.items.pop() if self.items else None

    out = path.with_name(path.stem + "_int8.onnx")
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return out


def _rate(run, macs: int, seconds: float = 1.5) -> float:
    run()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return macs / best


def measured_peaks(threads: int, m: int = 512, k: int = 2048, n: int = 2048) -> dict[str, float]:
    """Best MAC rate of a large MatMul: FP32 and INT8 on ONNX Runtime, INT8 on OpenVINO (via NNCF)."""
    import onnxruntime as ort

    macs = m * k * n
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = _matmul_model(Path(tmp) / "mm.onnx", m, k, n, int8=False)
        int8 = _matmul_model(Path(tmp) / "mm.onnx", m, k, n, int8=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        for name, path in (("fp32 onnxruntime", fp32), ("int8 onnxruntime", int8)):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            peaks[name] = _rate(lambda s=session: s.run(None, {"x": x}), macs)
        try:
            import nncf
            import openvino as ov

            core = ov.Core()
            model = core.read_model(str(fp32))
            quantized = nncf.quantize(model, nncf.Dataset([{"x": x}]), subset_size=1)
            for name, graph in (("fp32 openvino", model), ("int8 openvino", quantized)):
                compiled = core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                            "INFERENCE_PRECISION_HINT": "f32"})
                request = compiled.create_infer_request()
                peaks[name] = _rate(lambda r=request: r.infer({"x": x}), macs)
        except Exception as exc:  # OpenVINO figures are a bonus, not a requirement
            peaks["openvino (failed)"] = 0.0
            print(f"note: OpenVINO micro-benchmark failed: {exc}")
    return peaks


if __name__ == "__main__":
    cores = len(os.sched_getaffinity(0))
    print("ISA peaks (GMAC/s):", {k: round(v / 1e9, 1) for k, v in isa_peaks(cores).items()})
    print("measured peaks (GMAC/s):", {k: round(v / 1e9, 1) for k, v in measured_peaks(cores).items()})
