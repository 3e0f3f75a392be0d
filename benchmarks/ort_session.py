"""Two ONNX Runtime levers of the `cpu` target, A/B (issue #5): the shape fold and SkipLayerNormFusion.

    python benchmarks/ort_session.py [--duration 10]

1. Kernel: `Add` + `LayerNormalization` against ONNX Runtime's fused `SkipLayerNormalization`, at
   [1, 128, 384] (all-MiniLM-L6-v2's residual stream), each in a session of its own.
2. all-MiniLM-L6-v2 quantised for ONNX Runtime as the `cpu` target builds it (profile balanced, its 64
   calibration paragraphs, biases folded), with and without the shape-arithmetic fold
   (edgekit/stages/shape_fold.py; "without" replaces the fold by the identity in this process only).
   Each artifact runs with ONNX Runtime's own optimizers and with `SkipLayerNormFusion` disabled (what
   targets/cpu.toml's `disabled_optimizers` records in runtime.json). Latency at 1x16, 1x55 (the corpus'
   mean length), 1x128, 1x384 and 8x128, the sessions interleaved by the compile's own rule.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minilm_split import export_with_split  # noqa: E402


def _kernel_us(fused: bool, runs: int = 3000) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.runtimes import default_threads, ort_options

    hidden = 384
    inits = [numpy_helper.from_array(np.ones(hidden, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "beta")]
    if fused:
        nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft",
                                  epsilon=1e-12)]
    else:
        nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
                 helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 128, hidden]) for n in ("x", "skip")]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                                inits),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), ort_options(default_threads(), ("SkipLayerNormFusion",)),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(1, 128, hidden)).astype(np.float32), "skip": rng.normal(size=(1, 128, hidden)).astype(np.float32)}
    for _ in range(200):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (time.perf_counter() - start) / runs * 1e6


def main() -> None:
    import edgekit.stages.quantize_ort as quantize_ort
    import edgekit.stages.shape_fold as shape_fold
    from edgekit.config import load_profile, load_target
    from edgekit.graph import load
    from edgekit.runtimes import OrtSession, default_threads
    from edgekit.stages import benchmark
    from edgekit.stages.ort_int8 import fold_biases
    from edgekit.stages.shape_fold import FoldResult

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per shape, at least")
    args = parser.parse_args()
    threads = default_threads()
    fused, unfused = _kernel_us(True), _kernel_us(False)
    print(f"kernel, [1, 128, 384], {threads} threads: SkipLayerNormalization {fused:.0f} us, "
          f"Add + LayerNormalization {unfused:.0f} us ({fused / unfused:.2f}x)\n")
    disabled = load_target("cpu").disabled_optimizers
    with tempfile.TemporaryDirectory(prefix="edgekit-ort-session-") as tmp:
        work = Path(tmp)
        minilm = export_with_split(work)
        export, specs, calibration = minilm.export, minilm.specs, minilm.calibration
        profile = load_profile("balanced")
        artifacts = {}
        real_fold = shape_fold.fold_shapes
        for fold in (False, True):
            folder = work / f"fold-{fold}"
            folder.mkdir()
            shape_fold.fold_shapes = real_fold if fold else (lambda src, dst: FoldResult(src))
            result = quantize_ort.quantize_onnxruntime(export.onnx_path, folder, folder / "model.onnx", calibration,
                                                       profile, True)
            fold_biases(result.path)  # as the cpu target finishes it
            artifacts[fold] = result.path
            nodes = len(load(result.path, load_external_data=False).graph.node)
            print(f"INT8, shape fold {'on' if fold else 'off'}: {nodes} nodes; {result.settings.get('shape_arithmetic', 'nothing folded')}")
        shape_fold.fold_shapes = real_fold
        sessions = {"ONNX Runtime FP32 (plain export)": OrtSession(export.onnx_path, threads)}
        for fold, path in artifacts.items():
            for off in ((), disabled):
                label = f"INT8, fold {'on' if fold else 'off'}, {'+'.join(off) + ' disabled' if off else 'default optimizers'}"
                sessions[label] = OrtSession(path, threads, disabled_optimizers=off)
        print(f"\n{threads} threads; p50 ms, sessions interleaved as a compile does; x: against INT8 fold off, default optimizers\n")
        shapes = ((1, 16), (1, 55), (1, 128), (1, 384), (8, 128))
        print("| session | " + " | ".join(f"{b}x{n}" for b, n in shapes) + " |\n|---|" + "---:|" * len(shapes))
        rows: dict[str, list[str]] = {name: [] for name in sessions}
        for batch, length in shapes:
            feed = {s.name: np.full((batch, length), 1000 if s.name == "input_ids" else 1, np.int64) for s in specs}
            latency = benchmark.measure(sessions, feed, 20, args.duration, args.duration * 3)
            base = latency["INT8, fold off, default optimizers"].p50
            for name in sessions:
                rows[name].append(f"{latency[name].p50:.2f} ({base / latency[name].p50:.2f}x)")
        for name, cells in rows.items():
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
