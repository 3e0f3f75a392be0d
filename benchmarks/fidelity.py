"""What each `intel-cpu` INT8 choice costs in fidelity on text the compile never saw (issue 15 §4).

    python benchmarks/fidelity.py [--variant NAME ...] [--duration 10] [--rounds 3]

Each variant is a whole compile of the embedded model (all-MiniLM-L6-v2, `balanced`, build cache off) with the
quantiser's levers set as it names them (on NNCF's defaults; `shipped` is edgekit's recipe); the compile's own figures are read back from its report: cosine_min on its evaluation
set (in-domain: the corpus it calibrates on) and on the built-in out-of-domain set (never calibrated on). Then
every variant's artifact is timed side by side at 1x128 (sessions interleaved, `benchmark.measure`, the settings
its runtime.json records), so a fidelity gain is shown with what it costs in speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgekit  # noqa: E402
from edgekit.runtimes import default_threads, open_recorded  # noqa: E402
from edgekit.stages import benchmark  # noqa: E402


def _advanced(alpha: float | None = None, estimator: str | None = None):
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    extra: dict = {}
    if alpha is not None:
        extra["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=alpha)
    if estimator is not None:
        extra["activations_range_estimator_params"] = getattr(RangeEstimatorParametersSet, estimator)
    return {"advanced_parameters": AdvancedQuantizationParameters(**extra)}


def _ffn(layers: str) -> str:
    return rf".*/layer\.{layers}/output/dense/MatMul"


# A variant is a set of levers on NNCF's defaults (`shipped`: the recipe edgekit ships, quantize_ov rule 6): `sq` (SmoothQuant alpha of MatMuls; -1 off), `range` (NNCF's activation range
# estimator), `float` (name patterns left out of quantisation), `outliers` (the cpu recipe's outlier split),
# `nncf` (other keyword arguments of nncf.quantize).
OPENVINO_VARIANTS: dict[str, dict] = {
    "shipped": {"shipped": True},
    "NNCF defaults (before issue 15)": {},
    "smoothquant off": {"sq": -1},
    "smoothquant 0.5": {"sq": 0.5},
    "smoothquant 0.8": {"sq": 0.8},
    "full bias correction": {"nncf": {"fast_bias_correction": False}},
    "FFN output in float": {"float": [_ffn(r"\d+")]},
    "last layer in float": {"float": [r".*/layer\.5/.*"]},
    "activation range min-max": {"range": "MINMAX"},
    "activation range median": {"range": "MEDIAN_MINMAX"},
    **{f"FFN output of layer {k} in float": {"float": [_ffn(str(k))]} for k in range(6)},
    "outlier channels in float": {"outliers": True},
    "outlier channels in float, smoothquant 0.8": {"outliers": True, "sq": 0.8},
    "min-max, smoothquant 0.8": {"range": "MINMAX", "sq": 0.8},
    "min-max, smoothquant 0.8, FFN 0 in float": {"range": "MINMAX", "sq": 0.8, "float": [_ffn("0")]},
    "min-max, smoothquant 0.8, FFN 0 and 2 in float": {"range": "MINMAX", "sq": 0.8, "float": [_ffn("[02]")]},
    "min-max, FFN 0 in float": {"range": "MINMAX", "float": [_ffn("0")]},
    "min-max, smoothquant 0.8, outliers": {"range": "MINMAX", "sq": 0.8, "outliers": True},
    "min-max, smoothquant 0.8, outliers, FFN 0 in float": {"range": "MINMAX", "sq": 0.8, "outliers": True,
                                                             "float": [_ffn("0")]},
}


def nncf_arguments(levers: dict) -> dict:
    import nncf

    extra = dict(levers.get("nncf", {}))
    if "sq" in levers or "range" in levers:
        extra.update(_advanced(levers.get("sq"), levers.get("range")))
    patterns = list(levers.get("float", [])) + ([".*/outliers/.*"] if levers.get("outliers") else [])
    if patterns:
        extra["ignored_scope"] = nncf.IgnoredScope(patterns=patterns, validate=False)
    return extra


@contextmanager
def recipe(shipped: bool):
    """The shipped transformer levers (quantize_ov rule 6), or none of them: NNCF's defaults."""
    from edgekit.stages import quantize_ov

    original = quantize_ov.transformer_levers
    if not shipped:
        quantize_ov.transformer_levers = lambda src, profile: ({}, [], {})
    try:
        yield
    finally:
        quantize_ov.transformer_levers = original


@contextmanager
def outliers_split():
    """The `cpu` recipe's outlier split (stages/outliers.py) applied to the ONNX graph before OpenVINO reads it; the
    FP32 parts are left out of NNCF's quantisation."""
    import onnx

    from edgekit.stages import quantize_ov
    from edgekit.stages.outliers import split_outlier_channels
    from edgekit.stages.quantize_ort import gelu_fed_matmuls

    original = quantize_ov.convert_openvino

    def patched(src, dst, calibration, profile, transformer, on_sample=None):
        names = gelu_fed_matmuls(onnx.load(str(src), load_external_data=False)) if transformer else []
        path, split = split_outlier_channels(Path(src), Path(dst).parent / "outliers.onnx", names, calibration)
        return original(path, dst, calibration, profile, transformer, on_sample)

    quantize_ov.convert_openvino = patched
    try:
        yield
    finally:
        quantize_ov.convert_openvino = original


@contextmanager
def nncf_with(extra):
    """nncf.quantize with `extra` merged into its keyword arguments (an ignored scope is joined, not replaced)."""
    import nncf

    original = nncf.quantize

    def patched(model, dataset, **kwargs):
        merged = dict(kwargs)
        for key, value in extra.items():
            if key == "ignored_scope" and kwargs.get("ignored_scope") is not None:
                old = kwargs["ignored_scope"]
                value = nncf.IgnoredScope(names=list(old.names), patterns=list(old.patterns) + list(value.patterns),
                                          validate=False)
            merged[key] = value
        return original(model, dataset, **merged)

    nncf.quantize = patched
    try:
        yield
    finally:
        nncf.quantize = original


def compile_variant(name: str, extra: dict, target: str, out: Path, threads: int) -> dict:
    started = time.perf_counter()
    outer = outliers_split() if extra.get("outliers") else contextmanager(lambda: (yield))()
    with outer, nncf_with(nncf_arguments(extra)), recipe(bool(extra.get("shipped"))):
        report = edgekit.compile(None, targets=[target], profile="balanced", output=out, threads=threads,
                                 cache=False, no_bench=True)
    result = next(t for t in report.targets if t.target == target)
    ood = result.out_of_domain or {}
    return {"variant": name, "bundle": str(out), "seconds": time.perf_counter() - started,
            "cosine_min": result.accuracy.cosine_min, "cosine_mean": result.accuracy.cosine_mean,
            "ood_cosine_min": ood.get("cosine_min"), "ood_cosine_mean": ood.get("cosine_mean"), "n_ood": ood.get("n")}


def time_side_by_side(rows: list[dict], target: str, threads: int, duration: float, rounds: int) -> None:
    """p50 at 1x128 of every variant, interleaved, median over `rounds`; speed relative to the shipped one."""
    from transformers import AutoTokenizer

    sessions = {}
    for row in rows:
        folder = Path(row["bundle"]) / target
        recorded = json.loads((folder / "runtime.json").read_text())
        sessions[row["variant"]] = open_recorded(folder / recorded["artifact"], recorded, threads)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(rows[0]["bundle"]) / target))
    enc = tokenizer(["word " * 200], padding="max_length", truncation=True, max_length=128, return_tensors="np")
    feed = {k: v.astype(np.int64) for k, v in enc.items()}
    measured = [benchmark.measure(sessions, feed, 100, duration, duration * 4) for _ in range(rounds)]
    base = rows[0]["variant"]
    for row in rows:
        row["p50_ms"] = float(np.median([m[row["variant"]].p50 for m in measured]))
        row["speed_vs_shipped"] = float(np.median([m[base].p50 / m[row["variant"]].p50 for m in measured]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="intel-cpu", choices=["intel-cpu"])
    parser.add_argument("--variant", action="append", help="variant names (default: all)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = default_threads()
    names = args.variant or list(OPENVINO_VARIANTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-fidelity-") as tmp:
        for i, name in enumerate(names):
            rows.append(compile_variant(name, OPENVINO_VARIANTS[name], args.target, Path(tmp) / f"v{i}", threads))
            print(json.dumps(rows[-1]), flush=True)
        time_side_by_side(rows, args.target, threads, args.duration, args.rounds)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else platform.machine()
    print(f"\n{cpu}, {threads} threads; target {args.target}; "
          f"{args.rounds} interleaved rounds of {args.duration:g} s at 1x128\n")
    print("| variant | cosine_min in-domain | cosine_min out-of-domain (n) | cosine_mean out-of-domain | p50 ms | speed vs shipped |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['cosine_min']:.4f} | {r['ood_cosine_min']:.4f} ({r['n_ood']}) | "
              f"{r['ood_cosine_mean']:.4f} | {r['p50_ms']:.2f} | {r['speed_vs_shipped']:.2f}× |")


if __name__ == "__main__":
    main()
