"""Generation speed of a Qwen2.5-0.5B-sized decoder (issue 16): edgekit's `cpu` and `intel-cpu` INT4 artifacts beside
PyTorch FP32 and the peers' one-command artifacts, timed side by side in one run.

    python benchmarks/generation.py [--config qwen2.5-0.5b|tiny] [--new-tokens 32] [--prompt-lengths 32,128]
                                    [--min-runs 5] [--seconds 20] [--skip-peers]

No real LLM weights are reachable here: the model has the exact configuration of Qwen2.5-0.5B (24 layers, hidden 896,
vocabulary 151936, so the compute and memory traffic per token are the real model's) and random weights; its tokenizer
is one trained on edgekit's corpus (ids < 512: the embedding table and LM head are the full size). Figures of speed
only: perplexity and agreement of random weights say nothing.

Sessions, each through the same greedy KV-cache loop (runtimes/generation.py), interleaved (`benchmark.measure`):
- original: PyTorch FP32 with its own cache;
- edgekit `cpu` (ONNX Runtime MatMulNBits INT4) and `intel-cpu` (stateful OpenVINO IR, NNCF INT4), compiled by
  `edgekit.compile` with the `balanced` profile;
- optimum-intel: `optimum-cli export openvino --weight-format int4` (its defaults), opened as edgekit opens a stateful IR;
- ONNX Runtime GenAI's model builder at int4, when `onnxruntime-genai` is installed (else said so).
Reported per session: time to first token at each prompt length, time per output token, tokens/s, load time, resident
memory added, artifact size; and the memory-bandwidth floor of decode: the bytes of weights read per token over the
copy bandwidth this machine measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
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
from edgekit.runtimes.generation import GenerationSession  # noqa: E402
from edgekit.runtimes.pytorch import TorchDecoder  # noqa: E402
from edgekit.stages import benchmark  # noqa: E402
from edgekit.tasks.generation import prompt_of, timing_figures, token_feed  # noqa: E402

QWEN25_05B = {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
              "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
              "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2}
TINY = {**QWEN25_05B, "vocab_size": 4096, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 2048}


def build_model(folder: Path, config: dict) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from models import corpus_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus_tokenizer(folder)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(**config)).eval().save_pretrained(folder)
    return folder


def bytes_per_token(config: dict) -> dict[str, float]:
    """Weights read per generated token: every linear layer once, the LM head once (tied: the embedding table read
    as the head), the embedding lookup one row (nothing). FP32: 4 bytes a weight; INT4 with a group of 128 and an
    FP16 scale and zero point per group: 0.53 bytes; the INT8 head: 1 byte."""
    h, layers, inter, vocab = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"], config["vocab_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    linear = layers * (h * h * 2 + h * kv * 2 + 3 * h * inter)
    return {"fp32": 4.0 * (linear + vocab * h), "int4": 0.53 * linear + 1.0 * vocab * h}


def copy_bandwidth_gbs(megabytes: int = 512) -> float:
    """This machine's memory copy bandwidth (read + write), GB/s: the best of five copies of `megabytes`."""
    a = np.ones(megabytes * 2 ** 20 // 8)
    b = np.empty_like(a)
    best = min(_timed_copy(a, b) for _ in range(5))
    return 2 * a.nbytes / best / 1e9


def _timed_copy(a, b) -> float:
    start = time.perf_counter()
    np.copyto(b, a)
    return time.perf_counter() - start


def peer_optimum_intel(folder: Path, out: Path) -> Path | str:
    command = [str(Path(sys.executable).parent / "optimum-cli"), "export", "openvino", "--model", str(folder), "--task", "text-generation-with-past",
               "--weight-format", "int4", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    xml = out / "openvino_model.xml"
    return xml if done.returncode == 0 and xml.is_file() else f"optimum-cli failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"


def open_sessions(folder: Path, bundle: Path, peers: dict[str, Path], threads: int) -> tuple[dict, dict]:
    """name -> session, and name -> (load ms, resident MB added, size bytes). edgekit's artifacts run with their
    runtime.json settings (as shipped); a peer's IR with the same precision hint as edgekit's `intel-cpu`, so the
    artifacts differ, not the settings."""
    import json

    from edgekit.stages.export import load_model
    from edgekit.source import resolve_source

    recorded = {name: json.loads((bundle / name / "runtime.json").read_text()) for name in ("cpu", "intel-cpu")}
    hint = {"device": "CPU", "INFERENCE_PRECISION_HINT": recorded["intel-cpu"].get("INFERENCE_PRECISION_HINT", "f32")}
    print(f"OpenVINO precision hint for the layers left in float: {hint['INFERENCE_PRECISION_HINT']} (edgekit's choice, "
          "the peer's IR run with the same)")

    openers = {"original (PyTorch FP32)": (lambda: GenerationSession(TorchDecoder(load_model(resolve_source(str(folder)))[0], threads)),
                                           sum(p.stat().st_size for p in folder.glob("*.safetensors"))),
               "edgekit cpu (ORT INT4)": (lambda: get("onnxruntime").open(bundle / "cpu" / "model.onnx", recorded["cpu"], threads),
                                          (bundle / "cpu" / "model.onnx").stat().st_size),
               "edgekit intel-cpu (OV INT4)": (lambda: get("openvino").open(bundle / "intel-cpu" / "model.xml", recorded["intel-cpu"],
                                                                            threads),
                                               (bundle / "intel-cpu" / "model.bin").stat().st_size)}
    for name, xml in peers.items():
        openers[name] = (lambda x=xml: get("openvino").open(x, hint, threads), xml.with_suffix(".bin").stat().st_size)
    sessions, figures = {}, {}
    for name, (opener, size) in openers.items():
        before, start = benchmark.resident_mb(), time.perf_counter()
        sessions[name] = opener()
        figures[name] = ((time.perf_counter() - start) * 1e3, benchmark.resident_mb() - before, size)
    return sessions, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("qwen2.5-0.5b", "tiny"), default="qwen2.5-0.5b")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-lengths", default="32,128")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    lengths = [int(x) for x in args.prompt_lengths.split(",")]
    threads = default_threads()
    with tempfile.TemporaryDirectory(prefix="edgekit-generation-") as tmp:
        work = Path(tmp)
        folder = build_model(work / "model", QWEN25_05B if args.config == "qwen2.5-0.5b" else TINY)
        start = time.perf_counter()
        report = edgekit.compile(str(folder), targets=["cpu", "intel-cpu"], output=str(work / "bundle"), no_bench=True,
                                 cache=False, overrides={"eval_samples": 4, "calibration_samples": 2})
        for target in report.targets:
            print(f"  {target.target}: {'; '.join(target.notes)}")
        print(f"edgekit compile (cpu + intel-cpu, no bench): {time.perf_counter() - start:.0f} s")
        peers, missing = {}, []
        if not args.skip_peers:
            found = peer_optimum_intel(folder, work / "optimum-intel")
            (peers.__setitem__("optimum-intel int4 (OV)", found) if isinstance(found, Path) else missing.append(found))
            if importlib.util.find_spec("onnxruntime_genai") is None:
                missing.append("ONNX Runtime GenAI: onnxruntime-genai is not installed here (its model builder was not run)")
        sessions, loads = open_sessions(folder, work / "bundle", peers, threads)
        config = QWEN25_05B if args.config == "qwen2.5-0.5b" else TINY
        _measure_and_print(sessions, loads, lengths, args, threads, missing, _corpus_ids(folder), bytes_per_token(config))


def _measure_and_print(sessions, loads, lengths, args, threads, missing, pool, per_token) -> None:
    feeds = {n: token_feed(prompt_of(pool, n), args.new_tokens if n == lengths[0] else 1) for n in lengths}
    for n, feed in feeds.items():
        print(f"timing: prompt {n} tokens, {int(feed['new_tokens'][0])} new tokens, {len(sessions)} sessions interleaved")
        benchmark.measure(sessions, feed, args.min_runs, 1.0, args.seconds)
    bandwidth = copy_bandwidth_gbs()
    cpu = platform.processor() or platform.machine()
    print(f"\nmachine: {_cpu_name() or cpu}, {threads} threads; copy bandwidth {bandwidth:.1f} GB/s")
    print(f"| session | TTFT p50 ms @{lengths[0]} | " + " | ".join(f"TTFT p50 ms @{n}" for n in lengths[1:])
          + " | TPOT p50 ms | tokens/s | decode floor ms (weights read / bandwidth) | TPOT / floor | load ms | memory added MB | size MB |")
    print("|---|" + "---:|" * (len(lengths) + 7))
    for name, session in sessions.items():
        main = timing_figures(session.timings, lengths[0], args.new_tokens)
        others = [timing_figures(session.timings, n, 1) for n in lengths[1:]]
        load_ms, memory, size = loads[name]
        floor = per_token["fp32" if name.startswith("original") else "int4"] / (bandwidth * 1e9) * 1e3
        print(f"| {name} | {main['ttft_ms']['p50']:.1f} | " + " | ".join(f"{o['ttft_ms']['p50']:.1f}" for o in others)
              + f" | {main['tpot_ms']['p50']:.1f} | {main['tokens_per_s']:.1f} | {floor:.1f} | {main['tpot_ms']['p50'] / floor:.1f}x "
              f"| {load_ms:.0f} | {max(memory, 0.0):.0f} | {size / 1e6:.0f} |")
    for line in missing:
        print(f"- not measured: {line}")


def _corpus_ids(folder: Path) -> list[dict]:
    """The built-in corpus through the model's tokenizer: real text as prompts."""
    from transformers import AutoTokenizer

    from edgekit.data import CORPUS, read_lines

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return [{"input_ids": np.asarray([tokenizer(t)["input_ids"]])} for t in read_lines(CORPUS)]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    main()
