"""Compile all-MiniLM-L6-v2 for cpu and intel-cpu and print the report table and compile time.

    python benchmarks/compile_minilm.py [--profile balanced] [--target cpu --target intel-cpu] [-o DIR]

Speed is measured here, not in the tests. Every latency in the table is measured in the same run as
the PyTorch original (interleaved), so the speedups are ratios taken side by side on this machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import edgekit
from edgekit.progress import ConsoleProgress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="balanced")
    parser.add_argument("--target", action="append", dest="targets")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    targets = args.targets or ["cpu", "intel-cpu"]
    output = args.output or Path(tempfile.mkdtemp(prefix="edgekit-bench-")) / "minilm"
    started = time.perf_counter()
    report = edgekit.compile(None, targets=targets, profile=args.profile, output=output, progress=ConsoleProgress())
    seconds = time.perf_counter() - started
    print(report.to_markdown())
    print(f"compile, end to end: {seconds:.1f} s for {', '.join(targets)} on {os.cpu_count()} cores")
    print(f"bundle: {output}")


if __name__ == "__main__":
    main()
