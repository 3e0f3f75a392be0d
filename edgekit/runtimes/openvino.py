"""OpenVINO: IR artifacts (`model.xml` + `model.bin`) on an OpenVINO device (CPU, GPU, NPU).

Rules:
1. The artifact is `model.xml` with its weights in `model.bin`; a missing or short `.bin` is the user's
   file, not an OpenVINO failure (safety.check_ir). It runs with the target's PERFORMANCE_HINT; on the
   CPU with an explicit thread count, one stream and the precision of layers left unquantised (OpenVINO's
   own default is bf16 on CPUs with AMX or AVX512-BF16, so a figure says what ran).
2. `probe()` lists `openvino.Core().available_devices` and, for a GPU or NPU that is missing, why, in the
   plugin's words (a plugin that cannot load, a driver that is absent).
3. Length buckets (text models, the target's `length_buckets`): the IR stays dynamic; each call is padded
   to the smallest bucket that holds it and runs on a model compiled for that static shape, then its
   outputs are cut back to the true length (`BucketPlan`). Longer inputs run on the IR as built. A
   runtime.json records them; `length_buckets(settings)` reads them back (for embed's header too).
4. Recipes: NNCF post-training quantisation or a plain FP32 IR (stages/quantize_ov.py) for a target
   without its own precision; a device target's FP16 or INT8 IR (stages/openvino_device.py).
5. Recovery is NNCF's accuracy control with the worst-case output cosine as its metric.
6. A stateful IR (a KV cache made state: optimum-intel's layout, `beam_idx` input) opens as a generation
   session (runtimes/generation.py); its recipe is the ONNX decoder made stateful and its weights compressed by
   NNCF `compress_weights` (stages/weights.py). On an NPU the prompt and response lengths are fixed at compile
   time (`MAX_PROMPT_LEN`, `MIN_RESPONSE_LEN`, from the profile; runtime.json records them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..errors import InternalError, UsageError
from ..progress import task_if
from ..stages.base import BuildInputs, Step, StepInput, StepResult, step
from .base import Feed, RecoveryInputs, Runtime, RuntimeDevices, first_line, register

if TYPE_CHECKING:
    from ..config import Profile, Target

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
    llm_static: dict[str, int] = field(default_factory=dict)  # NPU: a stateful LLM's static lengths (rule 6)
    runtime: str = "openvino"
    output_names: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import openvino as ov

        if self.path.suffix == ".xml":
            from ..safety import check_ir

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
        if self.device == "NPU" and self.llm_static and self._model.get_sinks():  # rule 6: the NPU's LLM pipeline
            config.update({"NPU_USE_NPUW": "YES", "NPUW_LLM": "YES",
                           "NPUW_LLM_MAX_PROMPT_LEN": self.llm_static["MAX_PROMPT_LEN"],
                           "NPUW_LLM_MIN_RESPONSE_LEN": self.llm_static["MIN_RESPONSE_LEN"]})
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

    @property
    def input_names(self) -> set[str]:
        return set(self._input_names)

    def input_shape(self, name: str) -> list:
        """An input's shape: ints where fixed, None where dynamic."""
        port = next(i for i in self._model.inputs if name in i.get_names())
        return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

    @property
    def stateful(self) -> bool:
        """Whether the model keeps state between calls (a KV cache made stateful: rule 6)."""
        from .generation import BEAM_IDX

        return bool(self._model.get_sinks()) or BEAM_IDX in self._input_names

    def infer_request(self) -> Any:
        """The model as built, compiled once: its infer request (state lives there)."""
        if self._dynamic is None:
            self._dynamic = self._compile(self._model)
        return self._dynamic[1]

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


class OvDecoder:
    """A stateful IR (the KV cache held in the infer request's state, optimum-intel's layout) as a
    generation.Decoder (rule 6)."""

    start_id = None  # decoder-only (generation rule 4)

    def __init__(self, session: OpenVinoSession) -> None:
        self._session, self.runtime = session, session.runtime
        self._request = session.infer_request()
        self._inputs = session.input_names
        self.settings = {**session.settings, "generation": {
            "kv_cache": "stateful: held in the infer request's state (reset_state() between prompts; beam_idx [0])",
            **({"npu": dict(session.llm_static)} if session.llm_static else {})}}

    def reset(self, feed=None) -> None:  # a decoder-only model: the cache emptied (generation rule 4)
        self._request.reset_state()

    def step(self, ids: np.ndarray, past: int) -> np.ndarray:
        from .generation import step_feed

        self._request.infer(step_feed(ids, past, self._inputs))
        return np.array(self._request.get_tensor("logits").data)


def _infer(compiled: tuple[Any, Any], feed: Feed) -> list[np.ndarray]:
    """Run a (compiled model, infer request) pair; the outputs in the model's order."""
    model, request = compiled
    result = request.infer(feed, share_inputs=True)
    return [np.asarray(result[o]) for o in model.outputs]


def recorded_buckets(settings: Mapping[str, Any]) -> tuple[int, ...]:
    """The length buckets a runtime.json records (checked: a list of positive integers), else ()."""
    value = settings.get("length_buckets", [])
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536 for v in value):
        raise UsageError(f"runtime.json: 'length_buckets' must be a list of sequence lengths, not {value!r}")
    return tuple(value)


# ------------------------------------------------------------------ build steps (rule 4)


@step("NNCF quantise to IR")
def convert_ir(inp: StepInput) -> StepResult:
    """INT8 (NNCF, with the target's activations where it sets them) or FP32 IR, from the profile."""
    from ..stages.quantize_ov import convert_openvino

    b = inp.build
    recipe = dataclasses.replace(b.profile, activations=b.target.activations) if b.target.activations else b.profile
    with task_if(b.progress, recipe.precision == "int8", "calibration", len(b.calibration), b.target.name) as advance:
        result = convert_openvino(inp.path, b.artifact, b.calibration, recipe, b.transformer, on_sample=advance)
    return StepResult(b.artifact, result.settings, result.notes)


@step("convert for the device")
def convert_device_ir(inp: StepInput) -> StepResult:
    from ..stages.openvino_device import calibrates, convert_openvino_device

    b = inp.build
    with task_if(b.progress, calibrates(b.target, b.precision), "calibration", len(b.calibration), b.target.name) as advance:
        result = convert_openvino_device(inp.path, b.artifact, b.target, b.precision, b.calibration, b.profile,
                                         b.transformer, b.static, advance)
    return StepResult(b.artifact, result.settings, result.notes)


@register
class OpenVino(Runtime):
    name = "openvino"
    label = "OpenVINO"
    suffix = ".xml"
    reads = (".onnx", ".xml")
    target_keys = frozenset({"performance_hint", "precompiled_blob", "length_buckets"})
    runtime_only_keys = frozenset({"length_buckets"})

    def files(self, artifact: Path) -> list[Path]:
        from .generation import ENCODER, FIRST_STEP, encoder_of

        if artifact.suffix != ".xml":
            return [artifact]
        graphs = [artifact] + [g for g in (encoder_of(artifact, ENCODER), encoder_of(artifact, FIRST_STEP)) if g is not None]
        return [f for g in graphs for f in (g, g.with_suffix(".bin"))]  # an encoder-decoder's graphs (generation rule 4)

    def check_target(self, path: Path, data: dict[str, Any]) -> None:
        if data.get("length_buckets") and data.get("static_shapes"):
            raise UsageError(f"{path}: 'length_buckets' and 'static_shapes' exclude each other (a static-shape target has one length)")

    def probe(self) -> RuntimeDevices:
        import openvino as ov

        core = ov.Core()
        devices = tuple(core.available_devices)
        problems = {device: _why_absent(core, device) for device in ("GPU", "NPU")
                    if not any(d.split(".")[0] == device for d in devices)}
        return RuntimeDevices("openvino", ov.get_version().split("-")[0], devices, problems)

    def open_settings(self, target: "Target", profile: "Profile", present: bool) -> dict[str, Any]:
        device = target.device if present else target.verify_device
        # Without its device the artifact runs on the verify device in FP32: numerics only.
        float_precision = profile.float_precision if target.precision is None and device == "CPU" else "f32"
        settings = {"device": device, "PERFORMANCE_HINT": target.performance_hint, "INFERENCE_PRECISION_HINT": float_precision,
                    "length_buckets": list(target.length_buckets)}
        if target.static_shapes:  # rule 6: what a stateful LLM is compiled with on the NPU
            settings["llm_static"] = {"MAX_PROMPT_LEN": profile.generation_max_prompt_len,
                                      "MIN_RESPONSE_LEN": profile.generation_min_response_len}
        return settings

    def float_alternatives(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Base rule 7: bf16 for the layers left in float is measured against f32."""
        if settings.get("INFERENCE_PRECISION_HINT") == "bf16":
            return [{**settings, "INFERENCE_PRECISION_HINT": "f32"}]
        return []

    def open(self, artifact: Path, settings: Mapping[str, Any], threads: int):
        seq2seq = _seq2seq(artifact, threads, settings)
        if seq2seq is not None:  # an encoder-decoder: no length buckets, its caches grow a token a step
            return seq2seq
        static = settings.get("llm_static") or settings.get("generation", {}).get("npu")
        session = _session(artifact, threads, settings, recorded_buckets(settings),
                           llm_static=dict(static) if isinstance(static, Mapping) else {})
        if session.stateful:  # rule 6
            from .generation import GenerationSession

            return GenerationSession(OvDecoder(session))
        return session

    def absent_settings(self, target: "Target") -> dict[str, Any]:
        return {"PERFORMANCE_HINT": target.performance_hint}

    def length_buckets(self, settings: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[str, ...]]:
        buckets = recorded_buckets(settings)
        padded = settings.get("length_bucket_inputs", []) if buckets else []
        if not isinstance(padded, list) or not all(isinstance(name, str) for name in padded):
            raise UsageError(f"runtime.json: 'length_bucket_inputs' must be a list of input names, not {padded!r}")
        return buckets, tuple(padded)

    def how_it_runs(self, settings: Mapping[str, Any]) -> list[str]:
        buckets = settings.get("length_buckets")
        if not buckets:
            return []
        return [f"runs in length buckets ({', '.join(map(str, buckets))} tokens): each input is padded to the "
                "smallest bucket that holds it and the outputs are cut back; verified and timed that way (runtime.json). "
                "Loading compiles nothing: the first inference at each new bucket compiles it (in the cold-start "
                "table's first inference)"]

    def recipe(self, inputs: BuildInputs) -> list[Step]:
        if inputs.generative:  # rule 6
            from ..stages.weights import compress_openvino

            return [compress_openvino]
        return [convert_device_ir if inputs.target.precision is not None else convert_ir]

    def recover(self, inputs: RecoveryInputs):
        from ..stages.quantize_ov import save_ir
        from ..stages.recovery import recover_openvino

        b, profile = inputs.build, inputs.build.profile
        preset = "PERFORMANCE" if (b.target.activations or profile.activations) == "symmetric" else "MIXED"
        def as_shipped(model) -> float:  # a candidate's figure with the settings the artifact ships with (rule 4)
            candidate = b.workdir / "recovery" / "model.xml"
            candidate.parent.mkdir(parents=True, exist_ok=True)
            save_ir(model, candidate, compress_to_fp16=False)
            return inputs.score(self.open(candidate, inputs.open_settings, inputs.threads))[0]

        limit = inputs.limit if inputs.limit is not None else profile.budgets.min_cosine
        with b.progress.task("accuracy-control validation", None, b.target.name, inputs.metric) as advance:
            return recover_openvino(b.original_onnx, inputs.artifact, b.calibration, inputs.evaluation, inputs.expected,
                                    limit, inputs.before, b.transformer, preset,
                                    max(1, int(profile.recovery_seconds // 60)), lambda k, score: advance(k, figure=score),
                                    as_shipped, inputs.measure, inputs.metric)


def _seq2seq(artifact: Path, threads: int, settings: Mapping[str, Any]):
    """An encoder-decoder's IRs (generation rule 4: the decoder with past as the artifact, its first step and the
    encoder beside it) as a generation session; None for any other model."""
    from .generation import ENCODER, FIRST_STEP, GenerationSession, Seq2SeqDecoder, decoder_start, encoder_of

    encoder, first = encoder_of(artifact, ENCODER), encoder_of(artifact, FIRST_STEP)
    if encoder is None or first is None:
        return None

    session = _session(artifact, threads, settings)
    return GenerationSession(Seq2SeqDecoder(_session(encoder, threads, settings), session, decoder_start(artifact.parent),
                                            {n: session.input_shape(n) for n in session.input_names},
                                            first=_session(first, threads, settings)))


def _session(path: Path, threads: int, settings: Mapping[str, Any], buckets: tuple[int, ...] = (), **extra) -> "OpenVinoSession":
    """An IR opened with a runtime.json's settings (device, performance and precision hints)."""
    return OpenVinoSession(path, threads, str(settings.get("device", "CPU")), str(settings.get("PERFORMANCE_HINT", "LATENCY")),
                           str(settings.get("INFERENCE_PRECISION_HINT", "f32")), buckets, **extra)


def _why_absent(core: Any, device: str) -> str:
    """Why OpenVINO lists no `device`, in its plugin's words."""
    try:
        found = core.get_property(device, "AVAILABLE_DEVICES")
    except Exception as exc:
        return f"its {device} plugin cannot load ({first_line(exc)})"
    why = f"its {device} plugin finds no device" if not found else f"its {device} plugin lists {found}"
    if device == "NPU" and not found:
        try:
            core.get_property("NPU", "NPU_DRIVER_VERSION")
        except Exception as exc:
            why += f" ({first_line(exc)}: no NPU driver)"
    return why
