"""Reproducible bundles and the build cache, measured on all-MiniLM-L6-v2 (issue #7's "done when").

    python benchmarks/rebuild.py [--target cpu --target intel-cpu] [--keep]

Three `edgekit compile --no-bench` runs, each a separate process (as in a build pipeline):
  1. clean: an empty cache A           -> bundle 1, time T1
  2. clean: an empty cache B           -> bundle 2 (a second clean build, for reproducibility)
  3. warm: cache A, nothing changed    -> bundle 3, time T3
It prints the times, T3/T1, and whether the artifact files and the manifests' `artifact_sha256` of the three
bundles are byte-identical. Exit 1 when they differ or T3/T1 is not under 0.20.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASUREMENTS = ("report.json", "report.md", "manifest.json")
GOAL = 0.20


def artifact_files(bundle: Path) -> dict[str, str]:
    return {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file() and p.name not in MEASUREMENTS}


def compile_once(out: Path, cache_dir: Path, targets: list[str]) -> float:
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache_dir)}
    command = [sys.executable, "-m", "edgekit.cli", "compile", "-q", "--no-bench", "-o", str(out)]
    for target in targets:
        command += ["--target", target]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"compile failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", dest="targets")
    parser.add_argument("--keep", action="store_true", help="keep the bundles and caches (printed)")
    args = parser.parse_args()
    targets = args.targets or ["cpu", "intel-cpu"]
    work = Path(tempfile.mkdtemp(prefix="edgekit-rebuild-"))
    try:
        t1 = compile_once(work / "bundle-1", work / "cache-a", targets)
        t2 = compile_once(work / "bundle-2", work / "cache-b", targets)
        t3 = compile_once(work / "bundle-3", work / "cache-a", targets)
        bundles = [work / f"bundle-{i}" for i in (1, 2, 3)]
        files = [artifact_files(b) for b in bundles]
        sums = [json.loads((b / "manifest.json").read_text())["artifact_sha256"] for b in bundles]
        events = json.loads((bundles[2] / "report.json").read_text())["cache"]["events"]
        identical = files[0] == files[1] == files[2] and len(set(sums)) == 1
        ratio = t3 / t1
        print(f"targets: {', '.join(targets)}; {os.cpu_count()} cores; edgekit compile --no-bench, one process each")
        print(f"| build | cache | seconds | artifact_sha256 |\n|---|---|---:|---|")
        print(f"| 1 clean | empty A | {t1:.1f} | {sums[0][:16]} |")
        print(f"| 2 clean | empty B | {t2:.1f} | {sums[1][:16]} |")
        print(f"| 3 warm | A | {t3:.1f} | {sums[2][:16]} |")
        print(f"warm / clean: {ratio:.1%} (goal under {GOAL:.0%}); reused: "
              + ", ".join(e["label"] for e in events if e["outcome"] == "hit"))
        print(f"artifact files ({len(files[0])}) and artifact_sha256 byte-identical across the three: {identical}")
        if args.keep:
            print(f"kept: {work}")
        sys.exit(0 if identical and ratio < GOAL else 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
