"""Length buckets for an OpenVINO text artifact: dynamic shapes against static shapes per bucket (issue #5).

    python benchmarks/buckets.py BUNDLE [--buckets 64,128] [--rounds 30]

BUNDLE is an `edgekit compile` bundle with an `intel-cpu` target (e.g. `make demo`'s). The `intel-cpu`
target runs in the length buckets of its TOML file; this script compares any set of buckets with the
dynamic IR, to choose them. The artifact's IR is compiled on the CPU with the bundle's own runtime settings: as it is (dynamic: each input
runs at its true length), and once per bucket with the IR reshaped to [1, bucket] (each input padded
to the smallest bucket that holds it). Every corpus paragraph runs through each, interleaved round by
round; the table gives the mean latency per paragraph, the ratio to the dynamic one, and the worst
cosine of the mean-pooled outputs (padding masked out) against the dynamic outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)


def main() -> None:
    import openvino as ov
    from transformers import AutoTokenizer

    from edgekit.data import CORPUS, read_lines

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--buckets", default="64,128")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    folder = args.bundle / "intel-cpu"
    settings = json.loads((folder / "runtime.json").read_text())
    config = {k: settings[k] for k in ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "NUM_STREAMS")
              if k in settings}
    config = {k: (int(v) if k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS") else v) for k, v in config.items()}
    buckets = sorted(int(b) for b in args.buckets.split(","))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = read_lines(CORPUS)
    encoded = [tokenizer(t, truncation=True, max_length=buckets[-1], return_tensors="np") for t in texts]
    core = ov.Core()
    dynamic = core.compile_model(str(folder / "model.xml"), "CPU", config)
    static = {}
    for b in buckets:
        model = core.read_model(str(folder / "model.xml"))
        model.reshape({i.get_any_name(): ov.PartialShape([1, b]) for i in model.inputs})
        static[b] = core.compile_model(model, "CPU", config)
    names = [i.get_any_name() for i in dynamic.inputs]

    def feed(enc, length: int | None):
        out = {}
        for name in names:
            value = enc[name].astype(np.int64)
            if length is not None:
                value = np.pad(value, ((0, 0), (0, length - value.shape[1])))
            out[name] = value
        return out

    def run_dynamic(enc):
        return dynamic(feed(enc, None))[0]

    def run_bucketed(enc):
        length = enc["input_ids"].shape[1]
        bucket = next(b for b in buckets if b >= length)
        return static[bucket](feed(enc, bucket))[0][:, :length]

    sessions = {"dynamic": run_dynamic, "buckets " + "/".join(map(str, buckets)): run_bucketed}
    for run in sessions.values():  # warm-up, every shape once
        for enc in encoded:
            run(enc)
    times = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, run in sessions.items():
            start = time.perf_counter()
            for enc in encoded:
                run(enc)
            times[name].append((time.perf_counter() - start) * 1e3 / len(encoded))
    worst = 1.0
    for enc in encoded:
        a = pooled(run_dynamic(enc), enc["attention_mask"])[0]
        b = pooled(run_bucketed(enc), enc["attention_mask"])[0]
        worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    lengths = [e["input_ids"].shape[1] for e in encoded]
    base = statistics.median(times["dynamic"])
    print(f"{len(encoded)} corpus paragraphs, {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}); "
          f"{args.rounds} interleaved rounds; settings {config}")
    print("| session | mean ms per paragraph (median of rounds) | vs dynamic |\n|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {base / statistics.median(values):.2f}× |")
    print(f"worst cosine of pooled outputs, buckets against dynamic: {worst:.6f}")


if __name__ == "__main__":
    main()
