"""Text-to-text generation speed of a T5-small-sized encoder-decoder (issue 19): edgekit's `cpu` and `intel-cpu` INT4
artifacts beside PyTorch FP32 and optimum-intel's one-command INT4 artifact, timed side by side in one run.

    python benchmarks/seq2seq.py [--new-tokens 32] [--source-tokens 64] [--min-runs 5] [--seconds 20] [--skip-peers]

No real T5 weights are reachable here: the model has t5-small's configuration (6+6 layers, d_model 512, 8 heads,
vocabulary 32128: its compute and weight traffic per token) and random weights, with a tokenizer trained on edgekit's
corpus. Figures of speed only.

Sessions, interleaved (`benchmark.measure`), each asked for the same greedy output of `--new-tokens` tokens from a
source of `--source-tokens` corpus tokens:
- original: PyTorch FP32 through edgekit's loop (runtimes/generation.py rule 4);
- edgekit `cpu` (ONNX Runtime MatMulNBits INT4, encoder and merged decoder) and `intel-cpu` (OpenVINO, NNCF INT4), as
  compiled by `edgekit.compile` with the `balanced` profile, through the same loop;
- optimum-intel: `optimum-cli export openvino --task text2text-generation-with-past --weight-format int4`, run by its
  own `OVModelForSeq2SeqLM.generate` (greedy, exactly `--new-tokens` tokens).
Reported: p50 and p90 of a whole call (encoder, the first token, the rest), and time to first token and per output
token where edgekit's loop times them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import edgekit  # noqa: E402
from edgekit.runtimes import default_threads, get  # noqa: E402
from edgekit.runtimes.generation import DECODER_INPUT_IDS, INPUT_IDS, NEW_TOKENS, GenerationSession  # noqa: E402
from edgekit.runtimes.pytorch import TorchSeq2SeqDecoder  # noqa: E402
from edgekit.stages import benchmark  # noqa: E402
from edgekit.tasks.generation import timing_figures  # noqa: E402

T5_SMALL = {"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8,
            "relative_attention_num_buckets": 32, "feed_forward_proj": "relu", "tie_word_embeddings": True}


def build_model(folder: Path) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from models import corpus_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = corpus_tokenizer(folder, pad=True)
    torch.manual_seed(0)
    config = T5Config(vocab_size=32128, pad_token_id=tokenizer.pad_token_id, eos_token_id=2,
                      decoder_start_token_id=tokenizer.pad_token_id, **T5_SMALL)
    T5ForConditionalGeneration(config).eval().save_pretrained(folder)
    return folder


class OptimumIntel:
    """optimum-intel's artifact run by its own generate(): a session for `benchmark.measure` (whole calls only)."""

    runtime, output_names, settings = "openvino (optimum-intel)", [], {}

    def __init__(self, folder: Path, threads: int):
        from optimum.intel import OVModelForSeq2SeqLM

        self.model = OVModelForSeq2SeqLM.from_pretrained(str(folder), ov_config={"INFERENCE_NUM_THREADS": threads,
                                                                                  "PERFORMANCE_HINT": "LATENCY"})

    def run(self, feed):
        import torch

        n = int(feed[NEW_TOKENS][0])
        out = self.model.generate(torch.from_numpy(feed[INPUT_IDS]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  num_beams=1)
        return [out.numpy()]


def peer_optimum_intel(folder: Path, out: Path) -> Path | str:
    cli = str(Path(sys.executable).parent / "optimum-cli")
    for extra in ([], ["--disable-stateful"]):  # its stateful seq2seq export fails on some configurations
        done = subprocess.run([cli, "export", "openvino", "--model", str(folder), "--task", "text2text-generation-with-past",
                               "--weight-format", "int4", *extra, str(out)], capture_output=True, text=True)
        if done.returncode == 0 and (out / "openvino_encoder_model.xml").is_file():
            return out
    return f"optimum-cli failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--source-tokens", type=int, default=64)
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    threads = default_threads()
    with tempfile.TemporaryDirectory(prefix="edgekit-seq2seq-") as tmp:
        work = Path(tmp)
        folder = build_model(work / "model")
        start = time.perf_counter()
        report = edgekit.compile(str(folder), targets=["cpu", "intel-cpu"], output=str(work / "bundle"), no_bench=True,
                                 cache=False, overrides={"eval_samples": 4, "calibration_samples": 2})
        print(f"edgekit compile (cpu + intel-cpu, no bench): {time.perf_counter() - start:.0f} s; "
              + "; ".join(f"{t.target} {t.size_bytes / 1e6:.0f} MB" for t in report.targets))
        sessions = _sessions(folder, work / "bundle", threads)
        if not args.skip_peers:
            found = peer_optimum_intel(folder, work / "optimum-intel")
            if isinstance(found, Path):
                size = sum(p.stat().st_size for p in found.glob("*.bin"))
                sessions[f"optimum-intel int4 (its generate; {size / 1e6:.0f} MB)"] = OptimumIntel(found, threads)
            else:
                print(f"- not measured: {found}")
        _measure_and_print(sessions, folder, args, threads)


def _sessions(folder: Path, bundle: Path, threads: int) -> dict:
    import json

    from transformers import AutoModelForSeq2SeqLM

    recorded = {n: json.loads((bundle / n / "runtime.json").read_text()) for n in ("cpu", "intel-cpu")}
    return {"original (PyTorch FP32)": GenerationSession(TorchSeq2SeqDecoder(AutoModelForSeq2SeqLM.from_pretrained(str(folder)),
                                                                             threads)),
            "edgekit cpu (ORT INT4)": get("onnxruntime").open(bundle / "cpu" / "model.onnx", recorded["cpu"], threads),
            "edgekit intel-cpu (OV INT4)": get("openvino").open(bundle / "intel-cpu" / "model.xml", recorded["intel-cpu"], threads)}


def _measure_and_print(sessions: dict, folder: Path, args, threads: int) -> None:
    from transformers import AutoTokenizer, T5Config

    from edgekit.data import CORPUS

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer(" ".join(CORPUS.read_text().split("\n")))["input_ids"][:args.source_tokens]
    start = T5Config.from_pretrained(str(folder)).decoder_start_token_id
    feed = {INPUT_IDS: np.array([ids], dtype=np.int64), DECODER_INPUT_IDS: np.array([[start]], dtype=np.int64),
            NEW_TOKENS: np.array([args.new_tokens], dtype=np.int64)}
    print(f"timing: a source of {len(ids)} tokens, {args.new_tokens} new tokens, {len(sessions)} sessions interleaved")
    latencies = benchmark.measure(sessions, feed, args.min_runs, 1.0, args.seconds)
    original = latencies["original (PyTorch FP32)"].p50
    print(f"\nmachine: {_cpu_name()}, {threads} threads")
    print("| session | call p50 ms | call p90 ms | vs PyTorch | TTFT p50 ms | TPOT p50 ms | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, session in sessions.items():
        lat = latencies[name]
        timing = timing_figures(session.timings, len(ids), args.new_tokens) if hasattr(session, "timings") else None
        parts = ([f"{timing['ttft_ms']['p50']:.1f}", f"{timing['tpot_ms']['p50']:.2f}", f"{timing['tokens_per_s']:.0f}"]
                 if timing else ["—", "—", "—"])
        print(f"| {name} | {lat.p50:.1f} | {lat.p90:.1f} | {original / lat.p50:.2f}x | " + " | ".join(parts) + " |")


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
