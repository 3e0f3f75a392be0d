"""Device check for the `cuda` target (run on a machine with an NVIDIA GPU).

How it was run (2026-11-26, one NVIDIA H200): the FP16 `cuda/model.onnx` and its evaluation feeds were
built here on the CPU machine, onnxruntime-gpu's wheel was unpacked into /tmp/gc/ort on the GPU machine
(which cannot reach a package index), and this script ran from the repository root there, writing
$OUT/gpu_check.json. Figures: artifact on CUDA vs original cosine_min 0.9999984; vs its own CPU
verification 0.9999986; batch-1 p50 at 128 tokens 1.90 ms (ONNX Runtime CUDA, FP16) against 2.84 ms
(PyTorch FP32 on CUDA) and 2.73 ms (PyTorch FP16 on CUDA).

1. onnxruntime-gpu (unpacked in /tmp/gc/ort) is found, and edgekit's probe says `cuda` is present.
2. The FP16 artifact edgekit built on a CPU-only machine (model.onnx) runs on CUDAExecutionProvider
   through edgekit's own OrtSession; its outputs are compared with the CPU verification of the same
   file and with the original (PyTorch fp32 on the CPU), sample by sample (cosine of flattened outputs).
3. Batch-1 latency, interleaved with edgekit's harness: the original (PyTorch fp32 on CUDA, and fp16 on
   CUDA), against the artifact on ONNX Runtime CUDA. Every session returns host arrays (the copy back is
   part of the latency of each).
"""

import json
import os
import sys
import time

import numpy as np

GC = "/tmp/gc"
sys.path.insert(0, f"{GC}/ort")
REPO = os.getcwd()
sys.path.insert(1, REPO)
OUT = os.environ.get("OUT", "/tmp")

import onnxruntime as ort  # noqa: E402

result = {"onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__}
if hasattr(ort, "preload_dlls"):
    ort.preload_dlls(cuda=True, cudnn=True, msvc=False)
result["available_providers"] = ort.get_available_providers()

import torch  # noqa: E402

from edgekit import devices  # noqa: E402
from edgekit.config import load_target  # noqa: E402
from edgekit.runtimes import OrtSession  # noqa: E402
from edgekit.stages import benchmark, verify  # noqa: E402

found = devices.probe("onnxruntime")
here = devices.availability(load_target("cuda"), found)
result["probe"] = {"devices": list(found.devices), "problems": found.problems}
result["cuda_target_present"] = here.present
result["cuda_target_reason"] = here.reason
result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
result["torch"] = torch.__version__
print(json.dumps(result, indent=1), flush=True)

data = np.load(f"{GC}/gpu_data.npz")
names = ["token_embeddings", "sentence_embedding"]
n = len({k.split("/")[0] for k in data.files if k.startswith("feed")})
feeds = [{k.split("/")[1]: data[k] for k in data.files if k.startswith(f"feed{i}/")} for i in range(n)]
ref = [[data[f"ref{i}/{m}"] for m in names] for i in range(n)]
cpu = [[data[f"cpu{i}/{m}"] for m in names] for i in range(n)]
bench_feed = {k.split("/")[1]: data[k] for k in data.files if k.startswith("bench/")}

start = time.perf_counter()
PROVIDER = os.environ.get("PROVIDER", "CUDAExecutionProvider")  # CPUExecutionProvider: a dry run without a GPU
DEV = "cuda" if torch.cuda.is_available() else "cpu"
gpu_session = OrtSession(__import__("pathlib").Path(f"{GC}/model.onnx"), os.cpu_count() or 1, PROVIDER)
result["ort_cuda_load_ms"] = (time.perf_counter() - start) * 1e3
result["ort_cuda_session_providers"] = gpu_session._session.get_providers()
gpu = [gpu_session.run(f) for f in feeds]
vs_original = verify.compare(ref, gpu, names, False)
vs_cpu = verify.compare(cpu, gpu, names, False)
cpu_vs_original = verify.compare(ref, cpu, names, False)
result["artifact_on_gpu_vs_original"] = {"cosine_min": vs_original.cosine_min, "cosine_mean": vs_original.cosine_mean,
                                         "max_abs_error": vs_original.max_abs_error}
result["artifact_on_gpu_vs_artifact_on_cpu"] = {"cosine_min": vs_cpu.cosine_min, "max_abs_error": vs_cpu.max_abs_error}
result["artifact_on_cpu_vs_original"] = {"cosine_min": cpu_vs_original.cosine_min, "max_abs_error": cpu_vs_original.max_abs_error}


class TorchCuda:
    """The original all-MiniLM-L6-v2 on CUDA: BERT, mean pooling over the mask, L2 normalisation."""

    runtime = "pytorch"

    def __init__(self, folder: str, half: bool):
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(folder).eval().to(DEV)
        if half:
            self.model = self.model.half()
        self.output_names = names
        self.settings = {"runtime": "pytorch", "device": "cuda", "dtype": "fp16" if half else "fp32"}

    def run(self, feed):
        with torch.inference_mode():
            ids = torch.from_numpy(feed["input_ids"]).to(DEV)
            mask = torch.from_numpy(feed["attention_mask"]).to(DEV)
            tokens = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
            sentence = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out = [tokens.cpu().numpy(), sentence.cpu().numpy()]  # synchronises
        return out


torch_fp32 = TorchCuda(f"{GC}/model", half=False)
torch_fp16 = TorchCuda(f"{GC}/model", half=True)
tf32 = [torch_fp32.run(f) for f in feeds]
tf16 = [torch_fp16.run(f) for f in feeds]
result["torch_cuda_fp32_vs_original_cpu"] = {"cosine_min": verify.compare(ref, tf32, names, False).cosine_min}
result["torch_cuda_fp16_vs_original_cpu"] = {"cosine_min": verify.compare(ref, tf16, names, False).cosine_min}

sessions = {"original (pytorch fp32, cuda)": torch_fp32, "original (pytorch fp16, cuda)": torch_fp16,
            "cuda artifact (onnxruntime fp16, CUDAExecutionProvider)": gpu_session}
lat = benchmark.measure(sessions, bench_feed, min_runs=int(os.environ.get("RUNS", 300)), min_seconds=float(os.environ.get("SECONDS", 5)), max_seconds=30.0)
result["latency_ms_batch1_seq128"] = {k: {"p50": v.p50, "p90": v.p90, "p99": v.p99, "runs": v.runs, "cv": v.cv, "first": v.first_ms}
                                      for k, v in lat.items()}
print(json.dumps(result, indent=1), flush=True)
with open(f"{OUT}/gpu_check.json", "w") as fh:
    json.dump(result, fh, indent=1)
