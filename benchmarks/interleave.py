"""Does interleaving bill one runtime's aftermath to the next? Fixed-count blocks against time-based ones.

    python benchmarks/interleave.py BUNDLE [--rounds 3]

BUNDLE is `make demo`'s (all-MiniLM-L6-v2 for cpu and intel-cpu). Loads the PyTorch original and both
artifacts (with their runtime.json settings) in one process and times them at 1x128 with
`edgekit.stages.benchmark.measure`, alternately with blocks of a fixed 5 runs after 2 untimed ones (the
rule before) and with the shipped time-based blocks (~100 ms after ~20 ms untimed), `--rounds` times;
then each session alone. Prints p50 per session and the speedups over the original.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    from edgekit.runtimes import default_threads, open_recorded
    from edgekit.source import resolve_source
    from edgekit.stages import benchmark
    from edgekit.stages.export import load_reference

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = default_threads()
    sessions = {"original": load_reference(resolve_source(None), ["token_embeddings", "sentence_embedding"], threads)}
    for target in ("cpu", "intel-cpu"):
        settings = json.loads((args.bundle / target / "runtime.json").read_text())
        sessions[target] = open_recorded(args.bundle / target / settings["artifact"], settings, threads)
    feed = {"input_ids": np.full((1, 128), 2000, np.int64), "attention_mask": np.ones((1, 128), np.int64)}
    shipped = (benchmark.BLOCK_MS, benchmark.SETTLE_MS)

    def run(label: str, chosen: dict, block_ms: float, settle_ms: float) -> None:
        benchmark.BLOCK_MS, benchmark.SETTLE_MS = block_ms, settle_ms
        result = benchmark.measure(chosen, feed, 50, 8.0, 30.0)
        base = result.get("original")
        cells = [f"{name} {lat.p50:.2f} ms" + (f" ({base.p50 / lat.p50:.2f}×)" if base is not None and name != "original" else "")
                 for name, lat in result.items()]
        print(f"| {label} | " + " | ".join(cells) + " |")

    print(f"{threads} threads, 1x128; p50 per session (speedup over the original measured in the same run)\n")
    for _ in range(args.rounds):
        run("fixed 5 runs after 2", sessions, 0.0, 0.0)
        run(f"~{shipped[0]:g} ms after ~{shipped[1]:g} ms (shipped)", sessions, *shipped)
    for name, session in sessions.items():
        run(f"{name} alone", {name: session}, *shipped)


if __name__ == "__main__":
    main()
