"""The `split_outliers` lever and the bias fold of the `cpu` target, A/B (issue #5).

    python benchmarks/outliers.py [--duration 20]

Quantises all-MiniLM-L6-v2's FP32 export for ONNX Runtime with the `balanced` profile and its own 64
calibration paragraphs: with `split_outliers = false` (the feed-forward down projections, fed by GELU,
wholly FP32) and `true` (INT8, their outlier input channels split off in FP32: edgekit/stages/outliers.py),
the latter also without the bias fold (stages/ort_int8.py) that finishes a `cpu` artifact.
Prints, for each and for the FP32 export: the worst and mean cosine of the sentence embeddings against the
FP32 export over the 64 corpus paragraphs that neither calibration nor a compile's evaluation uses, and
p50 latency at 1x128, the sessions interleaved by the compile's own benchmark rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minilm_split import export_with_split  # noqa: E402


def main() -> None:
    from edgekit.config import load_profile
    from edgekit.runtimes import OrtSession, default_threads
    from edgekit.stages import benchmark
    from edgekit.stages.ort_int8 import fold_biases
    from edgekit.stages.quantize_ort import quantize_onnxruntime
    from edgekit.stages.verify import cosine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="timed seconds, at least")
    args = parser.parse_args()
    threads = default_threads()
    with tempfile.TemporaryDirectory(prefix="edgekit-outliers-") as tmp:
        work = Path(tmp)
        minilm = export_with_split(work)
        export, specs, calibration, unseen = minilm.export, minilm.specs, minilm.calibration, minilm.unseen
        profile = load_profile("balanced")
        sessions = {"ONNX Runtime FP32 (plain export)": OrtSession(export.onnx_path, threads)}
        for split, fold in ((False, True), (True, False), (True, True)):
            label = f"INT8, split_outliers = {str(split).lower()}, biases {'folded' if fold else 'not folded'}"
            folder = work / f"split-{split}-fold-{fold}"
            folder.mkdir()
            result = quantize_onnxruntime(export.onnx_path, folder, folder / "model.onnx", calibration,
                                          dataclasses.replace(profile, split_outliers=split), True)
            if fold:
                fold_biases(result.path)  # as the cpu target finishes it
            sessions[label] = OrtSession(result.path, threads)
            print(f"{label}: {result.settings.get('outlier_channels', 'no split')}; "
                  f"{(folder / 'model.onnx').stat().st_size / 1e6:.1f} MB")
        out = [o for o in sessions["ONNX Runtime FP32 (plain export)"].output_names].index("sentence_embedding")
        reference = [sessions["ONNX Runtime FP32 (plain export)"].run(f)[out] for f in unseen]
        feed = {s.name: np.ones((1, 128), np.int64) * (1000 if s.name == "input_ids" else 1) for s in specs}
        latency = benchmark.measure(sessions, feed, 50, args.duration, args.duration * 3)  # the compile's own rule
        base = latency["ONNX Runtime FP32 (plain export)"].p50
        print(f"\n{len(unseen)} unseen paragraphs; 1x128, {threads} threads, sessions interleaved as a compile does\n")
        print("| session | cosine min | cosine mean | p50 ms | vs FP32 |\n|---|---:|---:|---:|---:|")
        for name, session in sessions.items():
            cos = [cosine(r, session.run(f)[out]) for r, f in zip(reference, unseen)]
            p50 = latency[name].p50
            print(f"| {name} | {min(cos):.4f} | {np.mean(cos):.4f} | {p50:.2f} | {base / p50:.2f}× |")


if __name__ == "__main__":
    main()
