"""The floor: how fast a model could possibly run on this CPU.

1. `count_macs` counts the multiply-accumulates of every MatMul, Gemm and Conv of an ONNX graph for
   one input (the operand shapes are read off a real run, so symbolic shapes need no inference).
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


def count_macs(model_path: Path, feed: dict[str, np.ndarray]) -> tuple[int, int]:
    """(MACs, operators whose shapes could not be read) of one run on `feed`.

    The shapes come from running the graph: every MatMul/Gemm/Conv operand becomes a graph output
    for one ONNX Runtime run, so symbolic dimensions and shape arithmetic need no inference.
    """
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    initial = {i.name: list(i.dims) for i in model.graph.initializer}
    wanted = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            wanted += [t for t in (node.input[0], node.input[1], node.output[0]) if t and t not in initial]
    existing = {o.name for o in model.graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing:
            model.graph.output.append(helper.make_value_info(name, onnx.TypeProto()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(None, {k: v for k, v in feed.items() if k in {i.name for i in session.get_inputs()}})
    shapes = dict(initial)
    shapes.update({n: list(v.shape) for n, v in zip(names, values)})
    macs, unknown = 0, 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        a, b, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if a is None or b is None or out is None:
            unknown += 1
        elif node.op_type == "MatMul":
            macs += int(np.prod(out)) * a[-1]
        elif node.op_type == "Gemm":
            trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
            macs += int(np.prod(out)) * (a[0] if trans_a else a[1])
        else:  # Conv: weight [Cout, Cin/group, kh, kw]; each output element needs Cin/group*kh*kw MACs
            macs += int(np.prod(out)) * int(np.prod(b[1:]))
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
