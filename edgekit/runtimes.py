"""The runtimes behind one small interface: load an artifact, run a feed, get the outputs.

Every session takes a feed `{input name: numpy array}` and returns the outputs as numpy arrays in
`output_names` order. `settings` records what a figure measured with it needs to be reproduced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from .errors import InternalError, UsageError

Feed = dict[str, np.ndarray]


class Session(Protocol):
    runtime: str
    output_names: list[str]
    settings: dict[str, Any]

    def run(self, feed: Feed) -> list[np.ndarray]: ...


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass
class OrtSession:
    path: Path
    threads: int
    provider: str = "CPUExecutionProvider"
    runtime: str = "onnxruntime"
    output_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise UsageError(
                f"ONNX Runtime here has no {self.provider} (available: {', '.join(ort.get_available_providers())})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # A GPU provider runs what it has kernels for; ONNX Runtime places the rest on the CPU.
        providers = [self.provider] + (["CPUExecutionProvider"] if self.provider != "CPUExecutionProvider" else [])
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:
            raise InternalError(f"ONNX Runtime could not load {self.path.name}: {str(exc).splitlines()[0]}") from exc
        if self._session.get_providers()[0] != self.provider:  # onnxruntime-gpu falls back silently without a GPU
            raise UsageError(f"ONNX Runtime could not start {self.provider} here (it fell back to "
                             f"{', '.join(self._session.get_providers())}); no device or driver for it")
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._input_names = {i.name for i in self._session.get_inputs()}
        self.settings = {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "execution_provider": self.provider,
            "intra_op_num_threads": self.threads,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_ALL",
        }

    def run(self, feed: Feed) -> list[np.ndarray]:
        return self._session.run(None, {k: v for k, v in feed.items() if k in self._input_names})


@dataclass
class OpenVinoSession:
    path: Path
    threads: int
    device: str = "CPU"
    performance_hint: str = "LATENCY"
    inference_precision: str = "f32"  # CPU: the precision of layers left unquantised ("bf16" where the CPU has it)
    runtime: str = "openvino"
    output_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import openvino as ov

        if self.path.suffix == ".xml":
            from .safety import check_ir

            check_ir(self.path)  # a missing or short .bin is the user's file, not an OpenVINO failure
        core = ov.Core()
        if self.device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise UsageError(
                f"OpenVINO here has no {self.device} device (available: {', '.join(core.available_devices)}); "
                "compile on a machine with that device, or use a CPU target"
            )
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.performance_hint}
        if self.device == "CPU":
            # Explicit, so a figure says what ran: OpenVINO's own default is bf16 on CPUs with AMX or AVX512-BF16.
            config.update({"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": self.inference_precision,
                           "NUM_STREAMS": 1})
        try:
            self._compiled = core.compile_model(str(self.path), self.device, config)
        except Exception as exc:
            raise InternalError(f"OpenVINO could not compile {self.path.name} for {self.device}: {str(exc).splitlines()[0]}") from exc
        self._request = self._compiled.create_infer_request()
        self.output_names = [next(iter(o.get_names()), f"output_{i}") for i, o in enumerate(self._compiled.outputs)]
        self._input_names = {n for i in self._compiled.inputs for n in i.get_names()}
        self.settings = {"runtime": "openvino", "version": ov.get_version(), "device": self.device,
                         **{k: str(v) for k, v in config.items()}}
        self._core = core

    def export_blob(self, dst: Path) -> dict[str, Any]:
        """Write the compiled model (`export_model`): it loads on the same device, OpenVINO and driver only.

        Returns the versions it is bound to, read from the device's plugin.
        """
        import openvino as ov

        blob = self._compiled.export_model()  # bytes, or a BytesIO in recent releases
        dst.write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob))
        device = self.device.split(".")[0]
        versions: dict[str, Any] = {"openvino": ov.get_version(), "device": self.device}
        for key in ("FULL_DEVICE_NAME", f"{device}_DRIVER_VERSION", f"{device}_COMPILER_VERSION", "DEVICE_ARCHITECTURE"):
            try:
                versions[key.lower()] = str(self._core.get_property(self.device, key))
            except Exception:
                continue
        return versions

    def run(self, feed: Feed) -> list[np.ndarray]:
        result = self._request.infer({k: v for k, v in feed.items() if k in self._input_names})
        return [np.asarray(result[out]) for out in self._compiled.outputs]


class TorchSession:
    """The original PyTorch model, called the way its ONNX export is called."""

    runtime = "pytorch"

    def __init__(self, model: Any, library: str, output_names: list[str], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch = torch
        self._model = model.eval()
        self._library = library
        self.output_names = list(output_names)
        self.settings = torch_settings(threads)

    def run(self, feed: Feed) -> list[np.ndarray]:
        torch = self._torch
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
        with torch.inference_mode():
            outputs = self._model(inputs) if self._library == "sentence_transformers" else self._model(**inputs)
        found = dict(outputs.items()) if hasattr(outputs, "items") else {}
        missing = [n for n in self.output_names if n not in found]
        if missing:
            raise InternalError(f"the PyTorch model returned no output named {missing[0]} (it returned {', '.join(found)})")
        return [found[n].detach().float().numpy() for n in self.output_names]


def torch_settings(threads: int) -> dict[str, Any]:
    """What a TorchSession records, known without importing torch (for a reference that was never loaded)."""
    from importlib import metadata

    return {"runtime": "pytorch", "version": metadata.version("torch"), "num_threads": threads,
            "precision": "fp32", "mode": "eager, inference_mode"}


class LazySession:
    """A session opened on its first run: the original PyTorch model when the build cache already holds
    everything it would compute (a `--no-bench` rebuild never loads it)."""

    def __init__(self, opener: Callable[[], Session], runtime: str, output_names: list[str], settings: dict[str, Any]):
        self._opener, self._session = opener, None
        self.runtime, self.output_names, self.settings = runtime, list(output_names), dict(settings)

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def run(self, feed: Feed) -> list[np.ndarray]:
        if self._session is None:
            self._session = self._opener()
            self.settings = dict(self._session.settings)
        return self._session.run(feed)


def open_artifact(path: Path, runtime: str, threads: int, device: str = "CPU",
                  provider: str = "CPUExecutionProvider", performance_hint: str = "LATENCY",
                  inference_precision: str = "f32") -> Session:
    if runtime == "onnxruntime":
        return OrtSession(path, threads, provider)
    if runtime == "openvino":
        return OpenVinoSession(path, threads, device, performance_hint, inference_precision)
    raise UsageError(f"unknown runtime '{runtime}' (known: onnxruntime, openvino)")
