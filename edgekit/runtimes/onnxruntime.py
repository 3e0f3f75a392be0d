"""ONNX Runtime: ONNX artifacts on an execution provider (the CPU's, CUDA's, ...).

Rules:
1. The artifact is one `model.onnx`. It is verified and timed with the session options `ort_options`
   sets (runtime.json records them), on the target's execution provider where it is here, else on the CPU's.
2. `probe()` lists the execution providers ONNX Runtime can really use here: a listed provider other than
   the CPU's counts only when a one-node session actually runs on it (onnxruntime-gpu lists CUDA even
   where no GPU or driver is), and why a provider is missing is kept in ONNX Runtime's own words.
3. Recipes: INT8 (the profile's, on a target without its own precision): upgrade opset → pre-process →
   fold shapes → split outliers → quantise QDQ → (strip rounding, when recovery keeps layers FP32) →
   FP32 consumers read FP32 (transformers) (stages/quantize_ort.py), then, with the target's
   `contrib_ops`, keep that QDQ copy for recovery and fold the weight MatMuls' biases (stages/ort_int8.py). FP32: onnxruntime's transformer fusions (with
   the target's `graph_fusions`, Hugging Face sources), then the shape arithmetic folded into constants.
   A device target (its own precision): FP16 (stages/fp16.py) or FP32 as exported.
4. Recovery ranks the quantised layers by sensitivity and rebuilds with the fewest of them FP32 that meet
   the budget (stages/recovery.py); the rebuilt QDQ artifact is finished as the first one was.
5. A KV-cache decoder graph (`past_key_values.*` in, `present.*` out) opens as a generation session
   (runtimes/generation.py): its cache is fed back explicitly. Its recipe is weight-only: INT4 or INT8
   `MatMulNBits` (stages/weights.py); FP32 is the export as it is.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import InternalError, UsageError
from ..progress import NullProgress
from ..stages.base import BuildInputs, Step, StepInput, StepResult, copy_to_artifact, step
from .base import Availability, Feed, RecoveryInputs, Runtime, RuntimeDevices, first_line, register

if TYPE_CHECKING:
    from ..config import Profile, Target

# What `pip install edgekit[gpu]` brings; named in the reasons so the fix is one line away.
GPU_EXTRA = "install onnxruntime-gpu in place of onnxruntime (pip install edgekit[gpu]; see the README)"
DISABLE_OPTIMIZERS_KEY = "optimization.disable_specified_optimizers"  # ONNX Runtime session config entry
CPU_PROVIDER = "CPUExecutionProvider"
QDQ_COPY = "qdq.onnx"  # the INT8 artifact before its biases were folded (stages/ort_int8.py)


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
    provider: str = CPU_PROVIDER
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
        providers = [self.provider] + ([CPU_PROVIDER] if self.provider != CPU_PROVIDER else [])
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

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._session.get_inputs()]

    def input_shape(self, name: str) -> list:
        return next(i.shape for i in self._session.get_inputs() if i.name == name)


class OrtDecoder:
    """A KV-cache decoder graph (optimum's `text-generation-with-past` export) as a generation.Decoder: the cache is
    the graph's `present.*` outputs fed back as `past_key_values.*` (rule 5)."""

    start_id = None  # decoder-only (generation rule 4)

    def __init__(self, session: OrtSession) -> None:
        from .generation import cache_pairs

        self._session, self.runtime = session, session.runtime
        self._pairs = cache_pairs(session.input_names, session.output_names)
        self._index = {name: i for i, name in enumerate(session.output_names)}
        self._inputs = set(session.input_names)
        self._empty = {past: np.zeros([1] + [d if isinstance(d, int) else 0 for d in session.input_shape(past)[1:]],
                                      np.float32) for past, _ in self._pairs}
        self._cache: dict[str, np.ndarray] = {}
        self.settings = {**session.settings, "generation": {
            "kv_cache": "explicit: present.* outputs fed back as past_key_values.* inputs",
            "cache_inputs": len(self._pairs)}}

    def reset(self, feed=None) -> None:  # a decoder-only model: the cache emptied (generation rule 4)
        self._cache = dict(self._empty)

    def step(self, ids: np.ndarray, past: int) -> np.ndarray:
        from .generation import step_feed

        outputs = self._session.run({**step_feed(ids, past, self._inputs), **self._cache})
        self._cache = {p: outputs[self._index[o]] for p, o in self._pairs}
        return outputs[self._index["logits"]]


def open_onnx(path: Path, threads: int, provider: str = CPU_PROVIDER, disabled_optimizers: tuple[str, ...] = ()):
    """An ONNX file as a session: a KV-cache decoder as a generation session (rule 5), any other graph as it is."""
    from .generation import GenerationSession, Seq2SeqDecoder, cache_pairs, decoder_start, encoder_of

    session = OrtSession(path, threads, provider, disabled_optimizers=disabled_optimizers)
    if cache_pairs(session.input_names, session.output_names):
        encoder = encoder_of(path)
        if encoder is not None:  # an encoder-decoder (generation rule 4)
            return GenerationSession(Seq2SeqDecoder(
                OrtSession(encoder, threads, provider, disabled_optimizers=disabled_optimizers), session,
                decoder_start(path.parent), {n: session.input_shape(n) for n in session.input_names}))
        return GenerationSession(OrtDecoder(session))
    return session


def recorded_disabled_optimizers(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The graph optimizers a runtime.json's ONNX Runtime session config leaves out."""
    config = settings.get("session_config", {})
    value = config.get(DISABLE_OPTIMIZERS_KEY, "") if isinstance(config, dict) else None
    if not isinstance(value, str):
        raise UsageError(f"runtime.json: session_config {DISABLE_OPTIMIZERS_KEY!r} must be a string of names separated "
                         f"by ';', not {value!r}")
    return tuple(name for name in value.split(";") if name)


def _attaches(provider: str) -> str:
    """'' when a one-node model runs on `provider`, else why not."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider, CPU_PROVIDER])
        session.run(None, {"x": np.zeros(1, dtype=np.float32)})
    except Exception as exc:
        return first_line(exc)
    if provider not in session.get_providers():
        return f"it is listed, but a session could not start on it (no device or driver); it fell back to {', '.join(session.get_providers())}"
    return ""


# ------------------------------------------------------------------ build steps (rule 3)


@step("keep QDQ copy")
def keep_qdq_copy(inp: StepInput) -> StepResult:
    """What accuracy recovery reads: the INT8 artifact before its biases are folded."""
    shutil.copyfile(inp.path, inp.work / QDQ_COPY)
    return StepResult(inp.path)


@step("fold biases")
def fold_biases_step(inp: StepInput) -> StepResult:
    return StepResult(inp.path, _fold_biases(inp.path))


def _fold_biases(artifact: Path) -> dict[str, str]:
    from ..stages.ort_int8 import fold_biases

    folded = fold_biases(artifact)
    return {"bias_folded": f"{folded} weight MatMuls as com.microsoft.MatMulIntegerToFloat with their bias"} if folded else {}


@step("transformer fusions")
def transformer_fusions(inp: StepInput) -> StepResult:
    from ..stages.optimize import fuse_transformer

    cfg = inp.build.model_config or {}
    fused = fuse_transformer(inp.path, inp.work / "fused.onnx", cfg.get("model_type"), cfg.get("num_attention_heads", 0) or 0,
                             cfg.get("hidden_size", 0) or 0)
    settings = {"fusions": ", ".join(f"{k}×{v}" for k, v in sorted(fused.fused.items()))} if fused.fused else {}
    return StepResult(fused.path, settings, [fused.note] if fused.note else [])


@step("convert FP16")
def convert_fp16_step(inp: StepInput) -> StepResult:
    from ..stages.fp16 import convert_fp16

    result = convert_fp16(inp.path, inp.artifact)
    return StepResult(inp.artifact, result.settings, result.notes)


@register
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    label = "ONNX Runtime"
    suffix = ".onnx"
    reads = (".onnx",)
    target_keys = frozenset({"execution_provider", "graph_fusions", "contrib_ops", "disabled_optimizers"})
    runtime_only_keys = frozenset({"disabled_optimizers"})

    def files(self, artifact: Path) -> list[Path]:
        from .generation import encoder_of

        encoder = encoder_of(artifact)  # an encoder-decoder's encoder (generation rule 4)
        return [artifact] + ([encoder] if encoder is not None else [])

    def check_target(self, path: Path, data: dict[str, Any]) -> None:
        data.setdefault("execution_provider", CPU_PROVIDER)

    def probe(self) -> RuntimeDevices:
        import onnxruntime as ort

        usable, problems = [], {}
        for provider in ort.get_available_providers():
            why = "" if provider == CPU_PROVIDER else _attaches(provider)
            if why:
                problems[provider] = why
            else:
                usable.append(provider)
        return RuntimeDevices("onnxruntime", ort.__version__, tuple(usable), problems)

    def placement(self, target: "Target") -> str:
        return target.execution_provider or CPU_PROVIDER

    def recorded_placement(self, settings: Mapping[str, Any]) -> str:
        return str(settings.get("execution_provider") or CPU_PROVIDER)

    def availability(self, placement: str, found: RuntimeDevices) -> Availability:
        if placement in found.devices:
            return Availability(True)
        problem = found.problems.get(placement)
        if problem:
            return Availability(False, f"onnxruntime {found.version} cannot use {placement} here: {problem}")
        hint = f"; {GPU_EXTRA}" if placement == "CUDAExecutionProvider" else ""
        return Availability(False, f"onnxruntime {found.version} has no {placement} here "
                                   f"(providers: {', '.join(found.devices) or 'none'}){hint}")

    def open_settings(self, target: "Target", profile: "Profile", present: bool) -> dict[str, Any]:
        settings: dict[str, Any] = {"device": target.device if present else target.verify_device,
                                    "execution_provider": self.placement(target) if present else CPU_PROVIDER}
        if target.disabled_optimizers:
            settings["session_config"] = {DISABLE_OPTIMIZERS_KEY: ";".join(target.disabled_optimizers)}
        return settings

    def open(self, artifact: Path, settings: Mapping[str, Any], threads: int):
        return open_onnx(artifact, threads, self.recorded_placement(settings), recorded_disabled_optimizers(settings))

    def absent_settings(self, target: "Target") -> dict[str, Any]:
        return {"execution_provider": target.execution_provider}

    def how_it_runs(self, settings: Mapping[str, Any]) -> list[str]:
        disabled = recorded_disabled_optimizers(settings)
        if not disabled:
            return []
        return [f"ONNX Runtime runs it with graph optimizer(s) {', '.join(disabled)} disabled (session config "
                f"entry {DISABLE_OPTIMIZERS_KEY}, in runtime.json): verified and timed that way; "
                "the device should set the same entry"]

    def recipe(self, inputs: BuildInputs) -> list[Step]:
        target, precision = inputs.target, inputs.precision
        if inputs.generative:  # rule 5
            from ..stages.weights import compress_onnx

            return [compress_onnx] if precision in ("int4", "int8") else [copy_to_artifact]
        if target.precision is not None:  # a device target: its own precision (config rule 5)
            if precision == "fp16":
                return [convert_fp16_step]
            if precision == "fp32":
                return [copy_to_artifact]
            raise UsageError(f"target {target.name}: ONNX Runtime targets build fp16 or fp32, not {precision}")
        from ..stages.quantize_ort import qdq_steps
        from ..stages.shape_fold import fold_shapes_step

        if precision == "int8":
            return qdq_steps(inputs) + ([keep_qdq_copy, fold_biases_step] if target.contrib_ops else [])
        fusions = target.graph_fusions and inputs.model_config is not None  # a Hugging Face source
        return ([transformer_fusions] if fusions else []) + [fold_shapes_step, copy_to_artifact]

    def recover(self, inputs: RecoveryInputs):
        found = _recover(self, inputs)
        if found.kept_fp32 and inputs.build.target.contrib_ops:  # the rebuilt artifact is QDQ: finish it as the first one
            inputs.settings.pop("bias_folded", None)
            inputs.settings.update(_fold_biases(inputs.artifact))
        return found


def _recover(runtime: Runtime, inputs: RecoveryInputs):
    """Rank the artifact's quantised layers, then rebuild with the fewest FP32 layers that meet the budget
    (stages/recovery.py); the best artifact found (QDQ) is written over the artifact (rule 4)."""
    from ..stages import recovery
    from ..stages.base import run_recipe
    from ..stages.quantize_ort import qdq_steps

    b, profile, started = inputs.build, inputs.build.profile, time.monotonic()  # the bound counts the ranking too
    qdq = b.workdir / QDQ_COPY
    qdq = qdq if qdq.is_file() else inputs.artifact
    with b.progress.task("rank layers by sensitivity", None, b.target.name) as advance:
        ranked = recovery.rank_onnxruntime(b.original_onnx, qdq, inputs.evaluation[:8],
                                           lambda k, n: advance(k, total=n), inputs.measure or recovery.worst_cosine)
    candidates = len(recovery.quantised_layers(qdq))
    limit = max(1, int(profile.recovery_max_fp32_fraction * candidates))

    def rebuild(keep: list[str]) -> Path:
        folder = b.workdir / f"recovery-{len(keep)}"
        folder.mkdir(parents=True, exist_ok=True)
        rebuilt = replace(b, onnx=b.original_onnx, workdir=folder, artifact=folder / "model.onnx", keep_fp32=tuple(keep),
                          progress=NullProgress())  # the attempt is the sign of life, not its steps
        return run_recipe(qdq_steps(rebuilt), rebuilt).artifact

    def score(candidate: Path) -> tuple[float, bool]:  # as it ships (rule 4)
        return inputs.score(runtime.open(candidate, inputs.open_settings, inputs.threads))

    with b.progress.task("recovery attempt", recovery.most_attempts(min(limit, len(ranked)) or 1), b.target.name,
                         inputs.metric, profile.recovery_seconds) as advance:
        attempts = 0

        def show(attempt: recovery.Attempt) -> None:
            nonlocal attempts
            attempts += 1
            inputs.note(f"{attempt.fp32_layers} layer(s) FP32: {inputs.metric} {attempt.score:.4f} "
                        f"{'meets' if attempt.passed else 'misses'} the budget ({attempt.seconds:.1f} s)")
            advance(attempts, figure=attempt.score)

        found, best = recovery.search([name for name, _ in ranked], rebuild, score, inputs.before, limit,
                                      profile.recovery_seconds, show, started)
    found.candidates = candidates
    if best is not None and found.kept_fp32:
        shutil.copyfile(best, inputs.artifact)
    return found
