"""Scale-out (issue 18): one six-model project built three ways, every bundle's artifact_sha256 compared.

    python benchmarks/scale.py [--shards 3] [--keep DIR]

The project: the embedded all-MiniLM-L6-v2 (MiniLM-sized) and five tiny models the tests make (BERT classifier and
token classifier, ViT, a CNN as .onnx at opsets 13 and 11), each for `cpu` and `intel-cpu`, `--no-bench` (these are
build times). Built:
  (a) serially, `edgekit compile --project P` on one machine;
  (b) as N shards in N processes at once (`--shard I/N`), each with its own empty local cache and one shared remote
      cache on a SeaweedFS server started here on loopback (`EDGEKIT_CACHE_URL`);
  (c) through a local Ray cluster (`--executor ray`), with an empty cache;
  (b') (b) again with fresh local caches: everything should come from the remote cache.
Each run is its own process tree, timed wall-clock; the thread count is the machine's everywhere (calibration
numerics depend on it), so the artifacts must be byte-identical across (a), (b) and (c).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import models  # noqa: E402

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def make_project(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    models.tiny_bert(root / "models" / "bert")
    models.tiny_bert(root / "models" / "bert-tokens", task="token-classification")
    models.tiny_vit(root / "models" / "vit")
    models.tiny_cnn_onnx(root / "models" / "cnn.onnx")
    models.tiny_cnn_onnx(root / "models" / "cnn11.onnx", opset=11)
    entries = [("minilm", "default", ""), ("bert", "models/bert", ""), ("bert-tokens", "models/bert-tokens", ""),
               ("vit", "models/vit", ""), ("cnn", "models/cnn.onnx", "shape = { input = [1, 3, 32, 32] }\n"),
               ("cnn11", "models/cnn11.onnx", "shape = { input = [1, 3, 32, 32] }\n")]
    text = '[defaults]\ntargets = ["cpu", "intel-cpu"]\noutput = "build"\n'
    for name, source, extra in entries:
        text += f'\n[[models]]\nname = "{name}"\nsource = "{source}"\n{extra}'
    (root / "edgekit.toml").write_text(text)
    return root / "edgekit.toml"


def start_seaweedfs(data: Path) -> tuple[subprocess.Popen, str]:
    from test_remote_cache import _port

    import boto3

    data.mkdir(parents=True, exist_ok=True)
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    ports = [_port() for _ in range(6)]
    process = subprocess.Popen([weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}", "-s3",
                                f"-s3.port={ports[3]}", f"-s3.port.iceberg={ports[4]}", f"-s3.port.lance={ports[5]}",
                                "-volume.max=8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{ports[3]}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
    for _ in range(120):
        try:
            client.create_bucket(Bucket="edgekit")
            return process, endpoint
        except Exception:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("SeaweedFS did not start")


def env_for(cache: Path, remote: str | None = None, endpoint: str | None = None) -> dict[str, str]:
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache), "EDGEKIT_CACHE_KEY": "scale benchmark shared key",
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("EDGEKIT_CACHE_URL", None)
    if remote:
        env.update(EDGEKIT_CACHE_URL=remote, EDGEKIT_CACHE_ENDPOINT=endpoint)
    return env


def digests(build: Path) -> dict[str, str]:
    return {p.name: json.loads((p / "manifest.json").read_text())["artifact_sha256"]
            for p in sorted(build.iterdir()) if (p / "manifest.json").is_file()}


def timed(commands: list[tuple[list[str], dict]], cwd: Path) -> float:
    """Run the commands at once (each its own process), wall-clock seconds until the last ends."""
    start = time.perf_counter()
    running = [subprocess.Popen(c, env=e, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for c, e in commands]
    for p in running:
        _, err = p.communicate()
        if p.returncode not in (0, 1):
            raise SystemExit(f"a build failed (exit {p.returncode}): {err.strip().splitlines()[-1:] }")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-scale-")) if args.keep is None else args.keep
    project = make_project(work / "project")
    root, base = project.parent, [*EDGEKIT, "compile", "--project", str(project), "--no-bench", "-q"]
    figures, sums = {}, {}

    def collect(label: str) -> None:
        sums[label] = digests(root / "build")
        shutil.move(root / "build", work / f"build-{label}")

    figures["a"] = timed([(base, env_for(work / "cache-a"))], root)
    collect("a")
    server, endpoint = start_seaweedfs(work / "s3")
    try:
        for label in ("b", "b2"):
            remote = "s3://edgekit/scale"
            figures[label] = timed([(base + ["--shard", f"{i}/{args.shards}"], env_for(work / f"cache-{label}-{i}", remote, endpoint))
                                    for i in range(1, args.shards + 1)], root)
            collect(label)
    finally:
        server.terminate()
    figures["c"] = timed([(base + ["--executor", "ray"], env_for(work / "cache-c"))], root)
    collect("c")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores; {len(sums['a'])} models x 2 targets, --no-bench\n")
    print("| run | wall s | vs (a) | artifact_sha256 identical to (a) |\n|---|---:|---:|---|")
    names = {"a": "(a) serial, one machine", "b": f"(b) {args.shards} shards at once, empty local caches, S3 cold",
             "c": "(c) local Ray cluster", "b2": f"(b') {args.shards} shards, fresh local caches, S3 warm"}
    for label in ("a", "b", "c", "b2"):
        same = "yes" if sums[label] == sums["a"] else f"NO: {[m for m in sums['a'] if sums[label].get(m) != sums['a'][m]]}"
        print(f"| {names[label]} | {figures[label]:.1f} | {figures[label] / figures['a']:.2f} | {same} |")
    print(f"\n(b') took {figures['b2'] / figures['b']:.0%} of the cold sharded run (b)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
