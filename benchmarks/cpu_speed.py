"""How fast and how faithful are edgekit's CPU artifacts, against the original and plain exports?

    python benchmarks/cpu_speed.py [--duration 15] [--rounds 3] [--skip-cnn]

1. Compiles all-MiniLM-L6-v2 for `cpu` and `intel-cpu` (profile balanced) with `edgekit.compile`, the
   build cache off, and times it end to end.
2. Loads, in one process: the PyTorch original, the plain FP32 ONNX export on ONNX Runtime and on
   OpenVINO, and the two edgekit artifacts with the settings their runtime.json records (intel-cpu: in
   length buckets), plus the intel-cpu IR run at every input's own length (dynamic shapes, no buckets).
3. Fidelity: worst-case and mean cosine of the sentence embeddings against the original over the 64
   corpus paragraphs that neither calibration nor the compile's evaluation used.
4. Latency at batch 1, 128 tokens, every session interleaved (the speedups are ratios measured side by
   side), in `--rounds` rounds: the table gives each session's median p50 and median speedup, with the
   rounds' range (this host's speed drifts by tens of percent within minutes). Mean latency over the 64
   paragraphs at their true lengths (bucketed sessions pad to a bucket); throughput at batch 8 and 32.
5. The floor: the model's multiply-accumulates at 1x128 against this CPU's INT8 and FP32 peaks (from
   its ISA, cores and clock, and measured on large MatMuls), and each session's share of it.
6. A vision CNN (random weights, dynamic batch/height/width) exported to ONNX, compiled with --shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # noqa: E402
from minilm_split import export_with_split  # noqa: E402

import edgekit  # noqa: E402
from edgekit.graph import load  # noqa: E402
from edgekit.progress import ConsoleProgress  # noqa: E402
from edgekit.runtimes import OpenVinoSession, OrtSession, default_threads, open_recorded, recorded_buckets  # noqa: E402
from edgekit.source import resolve_source  # noqa: E402
from edgekit.stages import benchmark  # noqa: E402
from edgekit.stages.export import load_reference  # noqa: E402
from edgekit.stages.verify import cosine  # noqa: E402


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def minilm(duration: float, threads: int, workdir: Path, rounds: int = 3) -> dict:
    progress = ConsoleProgress()
    bundle = workdir / "minilm"
    started = time.perf_counter()
    # The compile time is a cold one: nothing from the build cache (no reads, no writes).
    report = edgekit.compile(None, targets=["cpu", "intel-cpu"], profile="balanced", output=bundle, threads=threads,
                             progress=progress, cache=False)
    compile_seconds = time.perf_counter() - started
    progress.stage(f"compiled in {compile_seconds:.1f} s; loading every session")

    source = resolve_source(None)
    minilm = export_with_split(workdir / "plain")
    export, specs, feeds = minilm.export, minilm.specs, minilm.unseen
    names = [o.name for o in load(export.onnx_path, load_external_data=False).graph.output]
    bench_feed = benchmark.batch_feed(report_feed(minilm.tokenizer, minilm.texts, specs), 1)

    # Each artifact runs with the settings its bundle records for the device (runtime.json).
    recorded = json.loads((bundle / "intel-cpu" / "runtime.json").read_text())
    recorded_cpu = json.loads((bundle / "cpu" / "runtime.json").read_text())
    buckets = recorded_buckets(recorded)
    sessions = {
        "PyTorch FP32 (original)": load_reference(source, names, threads),
        "ONNX Runtime FP32 (plain export)": OrtSession(export.onnx_path, threads),
        "OpenVINO FP32 (plain export)": OpenVinoSession(export.onnx_path, threads),
        "edgekit cpu (ONNX Runtime INT8)": open_recorded(bundle / "cpu" / "model.onnx", recorded_cpu, threads),
        "edgekit intel-cpu (OpenVINO INT8, length buckets)": open_recorded(bundle / "intel-cpu" / "model.xml", recorded,
                                                                           threads),
        "edgekit intel-cpu IR at dynamic shapes (OpenVINO INT8)": open_recorded(
            bundle / "intel-cpu" / "model.xml", {**recorded, "length_buckets": []}, threads),
    }
    out_index = names.index("sentence_embedding") if "sentence_embedding" in names else 0
    reference = [sessions["PyTorch FP32 (original)"].run(f)[out_index] for f in feeds]
    fidelity = {}
    for name, session in sessions.items():
        got = [session.run(f)[out_index] for f in feeds]
        cos = [cosine(r, g) for r, g in zip(reference, got)]
        fidelity[name] = (min(cos), float(np.mean(cos)))

    progress.stage(f"latency at 1x128, {len(sessions)} sessions interleaved, {rounds} round(s) of at least {duration:g} s")
    measured_rounds = [benchmark.measure(sessions, bench_feed, 100, duration, duration * 4) for _ in range(rounds)]
    p50 = {name: float(np.median([r[name].p50 for r in measured_rounds])) for name in sessions}
    cv = {name: float(np.median([r[name].cv for r in measured_rounds])) for name in sessions}
    speedups = {name: [r["PyTorch FP32 (original)"].p50 / r[name].p50 for r in measured_rounds] for name in sessions}
    progress.stage("mean latency over the 64 paragraphs at their true lengths, interleaved")
    real = {name: [] for name in sessions}
    for _ in range(3):  # rounds; in each, every session runs the whole set (after 2 untimed settle runs)
        for name, session in sessions.items():
            inputs = feeds
            for f in inputs[:2]:
                session.run(f)
            start = time.perf_counter()
            for f in inputs:
                session.run(f)
            real[name].append((time.perf_counter() - start) * 1e3 / len(inputs))
    real = {k: float(np.median(v)) for k, v in real.items()}
    progress.stage("throughput at batch 8 and 32")
    throughput = benchmark.measure_throughput(sessions, bench_feed, [8, 32], 10, duration / 3, duration)

    progress.stage("the floor: MACs at 1x128 and this CPU's peaks")
    macs, unknown = floor.count_macs(export.onnx_path, bench_feed)
    cores = threads
    isa = floor.isa_peaks(cores)
    measured = floor.measured_peaks(cores)
    int8_peak = max(v for k, v in measured.items() if k.startswith("int8"))
    fp32_peak = max(v for k, v in measured.items() if k.startswith("fp32"))
    isa_int8 = isa.get("int8 avx-512 vnni") or max((v for k, v in isa.items() if k.startswith("int8")), default=0)

    orig_real = real["PyTorch FP32 (original)"]
    rows = []
    for name in sessions:
        int8 = "INT8" in name
        peak = int8_peak if int8 else fp32_peak
        floor_ms = macs / peak * 1e3
        tp = throughput.get(name, {})
        rows.append([
            name, f"{p50[name]:.2f}", _spread(speedups[name]), f"{cv[name]:.0%}",
            f"{fidelity[name][0]:.4f}", f"{fidelity[name][1]:.4f}",
            f"{real[name]:.2f}", f"{orig_real / real[name]:.2f}×",
            "—" if 8 not in tp or tp[8].per_second is None else f"{tp[8].per_second:.0f}",
            "—" if 32 not in tp or tp[32].per_second is None else f"{tp[32].per_second:.0f}",
            f"{floor_ms / p50[name]:.0%} of {'INT8' if int8 else 'FP32'}" + (f" ({macs / isa_int8 * 1e3 / p50[name]:.0%} of VNNI)" if int8 and isa_int8 else ""),
        ])
    headers = ["session", "p50 ms @128", f"speedup (median{' and range' if rounds > 1 else ''} of {rounds})", "cv", "cosine min", "cosine mean", "real-length mean ms",
               "real-length speedup", "batch 8 /s", "batch 32 /s", "share of the floor"]
    lengths = [int(f["input_ids"].shape[1]) for f in feeds]
    summary = {
        "compile_seconds": compile_seconds,
        "speedups_at_1x128_by_round": speedups,
        "macs_at_1x128": macs, "unknown_shape_ops": unknown,
        "isa_peaks_gmacs": {k: v / 1e9 for k, v in isa.items()},
        "measured_peaks_gmacs": {k: v / 1e9 for k, v in measured.items()},
        "real_lengths": {"min": min(lengths), "mean": float(np.mean(lengths)), "max": max(lengths)},
        "report_verdict": report.verdict,
    }
    text = "\n".join([
        f"## all-MiniLM-L6-v2, {date.today()}, {platform.processor() or platform.machine()}, {threads} threads",
        "",
        table(headers, rows),
        "",
        f"- compile (cpu + intel-cpu, balanced, end to end, build cache off): {compile_seconds:.1f} s",
        f"- model: {macs / 1e9:.2f} GMAC at 1x128; INT8 floor {macs / int8_peak * 1e3:.2f} ms at the measured INT8 peak "
        f"({int8_peak / 1e9:.0f} GMAC/s), FP32 floor {macs / fp32_peak * 1e3:.2f} ms ({fp32_peak / 1e9:.0f} GMAC/s)",
        f"- ISA peaks (GMAC/s, {cores} cores at {floor.cpu_ghz():.2f} GHz): "
        + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in isa.items()),
        f"- measured peaks (GMAC/s): " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in measured.items()),
        f"- real lengths: {min(lengths)}–{max(lengths)} tokens, mean {np.mean(lengths):.0f}, over {len(feeds)} unseen paragraphs",
        f"- intel-cpu length buckets (its runtime.json): {', '.join(map(str, buckets)) or 'none'}",
    ])
    return {"markdown": text, "summary": summary}


def _spread(values: list[float]) -> str:
    """The median of the rounds' speedups, and their range when there are several."""
    median = float(np.median(values))
    return f"{median:.2f}×" + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else "")


def report_feed(tokenizer, texts, specs):
    from edgekit.data import benchmark_text

    return benchmark_text(tokenizer, texts, specs, 128)


def cnn(threads: int, workdir: Path) -> str:
    import torch
    from torch import nn

    torch.manual_seed(0)

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    model = nn.Sequential(block(3, 32, 2), block(32, 64, 2), block(64, 128, 2), block(128, 256, 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 100)).eval()
    path = workdir / "cnn.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}}, opset_version=13, dynamo=False)
    report = edgekit.compile(str(path), targets=["cpu", "intel-cpu"], shapes=["image=1,3,224,224"], output=workdir / "cnn-bundle",
                             threads=threads, progress=ConsoleProgress())
    return "## A vision CNN (random weights, synthetic inputs), 1x3x224x224\n\n" + report.to_markdown().split("\n\n", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="minimum timed seconds for the 1x128 latency")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 1x128 latency (median and range reported)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-cpu-speed-") as tmp:
        result = minilm(args.duration, args.threads, Path(tmp), max(1, args.rounds))
        print(result["markdown"])
        if not args.skip_cnn:
            print()
            print(cnn(args.threads, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
