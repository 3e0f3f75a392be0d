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


DISABLE_OPTIMIZERS_KEY = "optimization.disable_specified_optimizers"  # ONNX Runtime session config entry


def ort_options(threads: int, disabled_optimizers: tuple[str, ...] = ()):
    """The ONNX Runtime session options every artifact is verified and timed with (runtime.json records them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if disabled_optimizers:
        options.add_session_config_entry(DISABLE_OPTIMIZERS_KEY, ";".join(disabled_optimizers))
    return options


@dataclass
class OrtSession:
    path: Path
    threads: int
    provider: str = "CPUExecutionProvider"
    runtime: str = "onnxruntime"
    disabled_optimizers: tuple[str, ...] = ()  # graph optimizers left out (a target's `disabled_optimizers`)
    output_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise UsageError(
                f"ONNX Runtime here has no {self.provider} (available: {', '.join(ort.get_available_providers())})"
            )
        options = ort_options(self.threads, self.disabled_optimizers)
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
            **({"session_config": {DISABLE_OPTIMIZERS_KEY: ";".join(self.disabled_optimizers)}}
               if self.disabled_optimizers else {}),
        }

    def run(self, feed: Feed) -> list[np.ndarray]:
        return self._session.run(None, {k: v for k, v in feed.items() if k in self._input_names})


# Length buckets (OpenVINO): the IR stays dynamic; each call is padded to the smallest bucket that holds it
# and runs on a model compiled for that static shape, then its outputs are cut back to the true length.
BUCKET_PROBES = (17, 19)  # two unlikely lengths: the output axes that follow them are the sequence axes
MAX_COMPILED_SHAPES = 8  # compiled shapes kept at once (least recently used goes first)


@dataclass(frozen=True)
class BucketPlan:
    """How a text model runs in length buckets: which inputs are padded, which output axes are cut back."""

    buckets: tuple[int, ...]
    sequence_inputs: tuple[str, ...]  # padded with zeros on the right (the attention mask masks them out)
    output_axes: tuple[tuple[int, ...], ...]  # per output, the axes as long as the sequence

    def bucket_for(self, length: int) -> int | None:
        return next((b for b in self.buckets if b >= length), None)

    def pad(self, feed: Feed, bucket: int) -> Feed:
        out = dict(feed)
        for name in self.sequence_inputs:
            value = feed[name]
            out[name] = np.pad(value, ((0, 0), (0, bucket - value.shape[1])))
        return out

    def cut(self, outputs: list[np.ndarray], length: int) -> list[np.ndarray]:
        cut = []
        for value, axes in zip(outputs, self.output_axes):
            index = tuple(slice(0, length) if a in axes else slice(None) for a in range(value.ndim))
            cut.append(np.ascontiguousarray(value[index]) if axes else value)
        return cut

    def to_dict(self) -> dict[str, Any]:
        return {"length_buckets": list(self.buckets), "length_bucket_inputs": list(self.sequence_inputs),
                "length_bucket_padding": "zeros on the right up to the bucket; outputs cut back to the true length"}


def plan_buckets(model: Any, buckets: tuple[int, ...]) -> tuple[BucketPlan | None, str]:
    """(the plan, "") for a token-sequence model, else (None, why the buckets do not apply to it).

    Buckets apply when every input is an integer [batch, sequence] tensor with a free sequence length and one
    of them is `attention_mask` (so padding is masked out), and every output axis that depends on the length
    equals it (found by shaping the model at two probe lengths).
    """
    import openvino as ov

    names = []
    for port in model.inputs:
        name = port.get_any_name()
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 2 or shape[1].is_static \
                or not port.get_element_type().is_integral():
            return None, f"input {name} is not an integer [batch, sequence] tensor of free length"
        names.append(name)
    if "attention_mask" not in names:
        return None, "the model has no attention_mask input to mask the padding out"
    probes = []
    for length in BUCKET_PROBES:
        probe = model.clone()
        probe.reshape({n: ov.PartialShape([1, length]) for n in names})
        probes.append([[d.get_length() if d.is_static else -1 for d in o.get_partial_shape()] for o in probe.outputs])
    axes = []
    for i, (a, b) in enumerate(zip(*probes)):
        moving = tuple(k for k, (x, y) in enumerate(zip(a, b)) if x != y)
        if any((a[k], b[k]) != BUCKET_PROBES for k in moving) or len(a) != len(b):
            return None, f"output {i} does not follow the sequence length one to one"
        axes.append(moving)
    return BucketPlan(tuple(sorted(set(buckets))), tuple(names), tuple(axes)), ""


@dataclass
class OpenVinoSession:
    path: Path
    threads: int
    device: str = "CPU"
    performance_hint: str = "LATENCY"
    inference_precision: str = "f32"  # CPU: the precision of layers left unquantised ("bf16" where the CPU has it)
    length_buckets: tuple[int, ...] = ()  # static sequence lengths to pad to (see BucketPlan); () runs as built
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
        self._core, self._config = core, config
        try:
            self._model = core.read_model(str(self.path))
        except Exception as exc:
            raise InternalError(f"OpenVINO could not read {self.path.name}: {str(exc).splitlines()[0]}") from exc
        self._plan, skipped = plan_buckets(self._model, tuple(self.length_buckets)) if self.length_buckets else (None, "")
        self._compiled_shapes: dict[tuple[int, int], Any] = {}
        self._dynamic = None
        if self._plan is None:
            self._dynamic = self._compile(self._model)  # as built: a failure to compile shows at load
        self.output_names = [next(iter(o.get_names()), f"output_{i}") for i, o in enumerate(self._model.outputs)]
        self._input_names = {n for i in self._model.inputs for n in i.get_names()}
        self.settings = {"runtime": "openvino", "version": ov.get_version(), "device": self.device,
                         **{k: str(v) for k, v in config.items()}}
        if self._plan is not None:
            self.settings.update(self._plan.to_dict())
        elif skipped:
            self.settings["length_buckets_skipped"] = skipped

    def _compile(self, model: Any) -> Any:
        try:
            compiled = self._core.compile_model(model, self.device, self._config)
        except Exception as exc:
            raise InternalError(f"OpenVINO could not compile {self.path.name} for {self.device}: {str(exc).splitlines()[0]}") from exc
        return compiled, compiled.create_infer_request()

    def _for_shape(self, batch: int, bucket: int) -> Any:
        key = (batch, bucket)
        found = self._compiled_shapes.pop(key, None)
        if found is None:
            import openvino as ov

            model = self._model.clone()
            model.reshape({n: ov.PartialShape([batch, bucket]) for n in self._plan.sequence_inputs})
            found = self._compile(model)
            while len(self._compiled_shapes) >= MAX_COMPILED_SHAPES:
                self._compiled_shapes.pop(next(iter(self._compiled_shapes)))
        self._compiled_shapes[key] = found  # most recently used last
        return found

    def export_blob(self, dst: Path) -> dict[str, Any]:
        """Write the compiled model (`export_model`): it loads on the same device, OpenVINO and driver only.

        Returns the versions it is bound to, read from the device's plugin.
        """
        import openvino as ov

        if self._dynamic is None:
            self._dynamic = self._compile(self._model)
        blob = self._dynamic[0].export_model()  # bytes, or a BytesIO in recent releases
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
        feed = {k: v for k, v in feed.items() if k in self._input_names}
        plan = self._plan
        if plan is not None:
            shapes = {feed[n].shape for n in plan.sequence_inputs if n in feed}
            if len(shapes) == 1 and len(feed) == len(plan.sequence_inputs):
                batch, length = next(iter(shapes))
                bucket = plan.bucket_for(length)
                if bucket is not None:
                    compiled = self._for_shape(batch, bucket)
                    if bucket == length:
                        return _infer(compiled, feed)
                    return plan.cut(_infer(compiled, plan.pad(feed, bucket)), length)
            # longer than the largest bucket, or a feed the buckets cannot take: the model as built
        if self._dynamic is None:
            self._dynamic = self._compile(self._model)
        return _infer(self._dynamic, feed)


def _infer(compiled: tuple[Any, Any], feed: Feed) -> list[np.ndarray]:
    """Run a (compiled model, infer request) pair; the outputs in the model's order."""
    model, request = compiled
    result = request.infer(feed, share_inputs=True)
    return [np.asarray(result[o]) for o in model.outputs]


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


def recorded_buckets(settings: dict[str, Any]) -> tuple[int, ...]:
    """The length buckets a runtime.json records (checked: a list of positive integers), else ()."""
    value = settings.get("length_buckets", [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in value):
        raise UsageError(f"runtime.json: 'length_buckets' must be a list of sequence lengths, not {value!r}")
    return tuple(value)


def recorded_disabled_optimizers(settings: dict[str, Any]) -> tuple[str, ...]:
    """The graph optimizers a runtime.json's ONNX Runtime session config leaves out."""
    config = settings.get("session_config", {})
    value = config.get(DISABLE_OPTIMIZERS_KEY, "") if isinstance(config, dict) else None
    if not isinstance(value, str):
        raise UsageError(f"runtime.json: session_config {DISABLE_OPTIMIZERS_KEY!r} must be a string of names separated "
                         f"by ';', not {value!r}")
    return tuple(name for name in value.split(";") if name)


def open_recorded(artifact: Path, settings: dict[str, Any], threads: int) -> Session:
    """Open an artifact with the runtime settings a runtime.json records for it (device, provider, hints,
    length buckets, session config)."""
    return open_artifact(artifact, settings["runtime"], threads, settings.get("device", "CPU"),
                         settings.get("execution_provider", "CPUExecutionProvider"),
                         settings.get("PERFORMANCE_HINT", "LATENCY"), settings.get("INFERENCE_PRECISION_HINT", "f32"),
                         recorded_buckets(settings), recorded_disabled_optimizers(settings))


def open_artifact(path: Path, runtime: str, threads: int, device: str = "CPU",
                  provider: str = "CPUExecutionProvider", performance_hint: str = "LATENCY",
                  inference_precision: str = "f32", length_buckets: tuple[int, ...] = (),
                  disabled_optimizers: tuple[str, ...] = ()) -> Session:
    if runtime == "onnxruntime":
        return OrtSession(path, threads, provider, disabled_optimizers=tuple(disabled_optimizers))
    if runtime == "openvino":
        return OpenVinoSession(path, threads, device, performance_hint, inference_precision, tuple(length_buckets))
    raise UsageError(f"unknown runtime '{runtime}' (known: onnxruntime, openvino)")
