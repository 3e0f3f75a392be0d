"""`edgekit bench`: the compile's latency harness, on its own.

What PATH may be:
1. A bundle (a folder with manifest.json, read by bundle.read_bundle): each target's artifact, run with
   the settings recorded in its runtime.json, which must name an artifact inside the target's folder;
   every file must match the manifest (the check `verify` makes first), else a usage error. `--original`
   adds the source model named in the manifest, found where it names it and only if its weights' sha256
   match the manifest's (another model is never timed as "the original").
2. One artifact: `model.onnx` (ONNX Runtime, or OpenVINO with `--target intel-cpu`) or `model.xml`.
3. A model (a Hugging Face folder or hub id): exported to FP32 ONNX on the fly and run on each
   target's runtime; `--original` adds the PyTorch model.

Inputs: text from the built-in corpus at `--sequence-length` tokens when a tokenizer sits beside the
artifact or model, else synthetic inputs of each input's dtype at its fixed shape (`--shape` fixes
free dimensions). Every session is measured interleaved, with the same statistics as `compile`.
4. A generative model (a KV-cache decoder) is timed on a prompt of `--sequence-length` corpus tokens and
   GENERATED_TOKENS greedy tokens through its cache, the original (`--original`) through the same loop.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import graph, safety
from . import runtimes
from .config import load_target
from .request import DEFAULT_TARGETS
from .bundle import read_bundle
from .data import CORPUS, benchmark_text, read_lines, synthetic_feed
from .errors import UsageError
from .progress import NullProgress, rounds
from .report import latency_json, throughput_json
from .runtimes import Feed, Session, TorchSession, default_threads, open_artifact
from .runtimes.onnxruntime import open_onnx
from .source import DEFAULT_MODEL_ID, resolve_source
from .stages import benchmark
from .table import Table


@dataclass
class Measured:
    name: str
    runtime: str
    artifact: str
    latency: benchmark.Latency
    throughput: dict[int, benchmark.Throughput]
    load_ms: float | None
    memory_mb: float | None
    settings: dict[str, Any]
    speedup_p50: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "runtime": self.runtime, "artifact": self.artifact, **latency_json(self.latency),
                "throughput": throughput_json(self.throughput), "load_ms": self.load_ms, "memory_mb": self.memory_mb,
                "speedup_p50": self.speedup_p50, "settings": self.settings}


@dataclass
class BenchReport:
    path: str
    input: str
    threads: int
    batches: list[int]
    results: list[Measured]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "input": self.input, "threads": self.threads, "batches": self.batches,
                "interleaved": True, "results": [r.to_dict() for r in self.results], "notes": self.notes}

    def to_markdown(self) -> str:
        lines = [f"# edgekit bench: {self.path}", "",
                 f"- input {self.input}, {self.threads} threads, batch-1 latency; sessions interleaved in one run", "",
                 self._table().to_markdown()]
        noisy = benchmark.noisy_note((r.name, r.latency) for r in self.results)
        notes = list(self.notes) + [f"{r.name}: {t.note}" for r in self.results for t in r.throughput.values() if t.note]
        if noisy:
            notes.append(noisy)
        if notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"

    def _table(self) -> Table:
        """One row per session: batch-1 latency, cold start, memory, then samples per second at each batch > 1."""
        batches = [b for b in self.batches if b > 1]
        table = Table(["session", "runtime", "p50 ms", "p90 ms", "p99 ms", "std ms", "runs", "speedup p50", "load ms",
                       "first ms", "memory added MB"] + [f"batch {b} /s" for b in batches], align="ll" + "r" * (9 + len(batches)))
        for r in self.results:
            lat = r.latency
            per_second = [r.throughput.get(b) for b in batches]
            table.add(r.name, r.runtime, f"{lat.p50:.2f}", f"{lat.p90:.2f}", f"{lat.p99:.2f}", f"{lat.std:.2f}", str(lat.runs),
                      _or_dash(r.speedup_p50, ".2f", "×"), _or_dash(r.load_ms, ".0f"), f"{lat.first_ms:.1f}",
                      _or_dash(r.memory_mb, ".0f"), *(_or_dash(t and t.per_second, ".1f") for t in per_second))
        return table


def _or_dash(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _specs_of(path: Path) -> list[graph.InputSpec]:
    if path.suffix == ".xml":
        return graph.ir_input_specs(path)[0]
    return graph.input_specs(graph.load(path, load_external_data=False))


GENERATED_TOKENS = 32  # a generative model's benchmark: a prompt of --sequence-length tokens, then this many greedy


def _generative(specs: list[graph.InputSpec]) -> bool:
    from .runtimes.generation import takes_cache

    return takes_cache(s.name for s in specs)


def _encoder(folder: Path) -> Path | None:
    """An encoder-decoder's encoder graph in a target's folder (generation rule 4), or None."""
    from .runtimes.generation import ENCODER

    return next((folder / (ENCODER + suffix) for suffix in (".onnx", ".xml") if (folder / (ENCODER + suffix)).is_file()), None)


def _speech_feed(folder: Path, start: int) -> Feed:
    """Rule 4 for a speech recogniser: the first built-in clip through its feature extractor, then greedy tokens."""
    from transformers import AutoFeatureExtractor

    from .data import SPEECH, read_wav, resample
    from .runtimes.generation import AUDIO_FEATURES, DECODER_INPUT_IDS, NEW_TOKENS

    fe = AutoFeatureExtractor.from_pretrained(str(folder))
    rate = int(getattr(fe, "sampling_rate", 16000))
    wave, clip_rate = read_wav(sorted(SPEECH.glob("*.wav"))[0])
    features = fe(resample(wave, clip_rate, rate), sampling_rate=rate, return_tensors="np")[AUDIO_FEATURES]
    return {AUDIO_FEATURES: np.ascontiguousarray(features, dtype=np.float32), DECODER_INPUT_IDS: np.array([[start]]),
            NEW_TOKENS: np.array([GENERATED_TOKENS])}


def _feed(specs: list[graph.InputSpec], folder: Path, shapes: dict[str, tuple[int, ...]], sequence_length: int) -> Feed:
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if _generative(specs):  # rule 4: a real prompt, then greedy tokens through the cache
            from .runtimes.generation import AUDIO_FEATURES, decoder_start
            from .tasks.generation import prompt_of, token_feed

            encoder = _encoder(folder)  # an encoder-decoder: the prompt is its source
            if encoder is not None and any(s.name == AUDIO_FEATURES for s in _specs_of(encoder)):  # a speech recogniser
                return _speech_feed(folder, decoder_start(folder))
            ids = [{"input_ids": np.asarray([tokenizer(text)["input_ids"]])} for text in read_lines(CORPUS)]
            return token_feed(prompt_of(ids, sequence_length), GENERATED_TOKENS,
                              [decoder_start(folder)] if encoder is not None else None)
        return benchmark_text(tokenizer, read_lines(CORPUS), graph.resolve_shapes(specs, shapes), sequence_length)
    fixed = graph.resolve_shapes(specs, shapes)
    graph.require_static(fixed)
    safety.check_input_bytes(fixed, 1)
    return synthetic_feed(fixed, np.random.default_rng(0))


def _timed_open(opener) -> tuple[Session, float, float]:
    before = benchmark.resident_mb()
    start = time.perf_counter()
    session = opener()
    return session, (time.perf_counter() - start) * 1e3, before


@dataclass
class _Plan:
    """What `bench` measures: the sessions to open and where the inputs' shapes and preprocessors come from."""

    openers: list[tuple[str, str, str, Any]]  # (name, runtime, artifact, opener)
    folder_for_inputs: Path
    artifact_for_specs: Path
    notes: list[str] = field(default_factory=list)


def bench(path: str | Path, targets: list[str] | None = None, batches: list[int] | None = None, duration: float = 3.0,
          with_original: bool = False, threads: int | None = None, sequence_length: int = 128,
          shapes: dict[str, tuple[int, ...]] | None = None, progress=None) -> BenchReport:
    progress = progress or NullProgress()
    threads = threads or default_threads()
    batches = sorted(set(batches or [1]) | {1})
    text = str(path)
    p = Path(text)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as workdir:
        if p.is_dir() and (p / "manifest.json").is_file():
            plan = _plan_bundle(p, targets, with_original, threads)
        elif _readers(p.suffix):
            plan = _plan_artifact(p, targets, with_original, threads)
        else:
            plan = _plan_model(text, targets, with_original, threads, Path(workdir), progress)
        feed = _feed(_specs_of(plan.artifact_for_specs), plan.folder_for_inputs, shapes or {}, sequence_length)
        results = _measure(plan, feed, batches, duration, progress)
    return BenchReport(text, ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items()), threads, batches, results, plan.notes)


def _plan_bundle(p: Path, targets: list[str] | None, with_original: bool, threads: int) -> _Plan:
    """Each target of a bundle whose device is here, opened with its runtime.json; `--original`: its source."""
    bundle = read_bundle(p)
    found = bundle.target_names()
    wanted = set(targets or found)
    unknown = wanted - set(found)
    if unknown:
        raise UsageError(f"{p}: the bundle has no target {', '.join(sorted(unknown))} (it has {', '.join(found)})")
    openers, notes = [], []
    for target in (bundle.target(name) for name in found if name in wanted):
        here = target.record.availability()
        if not here.present and not targets:  # named with --target: let it fail, saying why
            notes.append(f"{target.name}: not benchmarked: {here.reason}")
            continue
        openers.append((target.name, target.record.runtime, f"{target.name}/{target.artifact.name}",
                        lambda t=target: t.record.open(t.artifact, threads)))
    if not openers:
        raise UsageError(f"{p}: no target of this bundle can run here ({'; '.join(notes)})")
    from .verify_bundle import check_files

    _, mismatch = check_files(bundle.root, bundle.manifest)  # what is timed is what was built (rule 1)
    if mismatch:
        raise UsageError(f"{p}: the bundle does not match its manifest ({mismatch}); run `edgekit verify {p}` and recompile")
    first = p / openers[0][2]
    if with_original:
        source = bundle.manifest.get("source", {})
        location = _compiled_original(p, source)
        if source.get("kind") == "onnx":
            openers.insert(0, ("original", "onnxruntime", location, lambda: open_onnx(Path(location), threads)))
        else:
            openers.insert(0, ("original", "pytorch", location,
                               lambda: _torch_original(None if location == DEFAULT_MODEL_ID else location, first, threads)))
    return _Plan(openers, first.parent, first, notes)


def _compiled_original(p: Path, source: dict) -> str:
    """Rule 1: the original the bundle was compiled from, found where the manifest says and checked against its
    recorded weights' sha256; a usage error otherwise (never another model timed as "the original")."""
    from .source import resolve_source

    location = source.get("location")
    if not isinstance(location, str) or not location:
        raise UsageError(f"{p}: manifest.json names no source model; --original has nothing to run")
    try:
        found = resolve_source(None if location == DEFAULT_MODEL_ID else location)
    except UsageError as exc:
        raise UsageError(f"--original: cannot find the original compiled into {p} ({location}: {exc}); run bench "
                         "from the folder the compile ran in, or without --original") from None
    recorded = source.get("weights_sha256")
    if not isinstance(recorded, dict) or not recorded or found.weight_files != recorded:
        raise UsageError(f"--original: {location} is not the model compiled into {p} (its weights' sha256 differ from "
                         "the manifest's); run bench from the folder the compile ran in, or without --original")
    return str(found.path) if source.get("kind") == "onnx" else location


def _plan_artifact(p: Path, targets: list[str] | None, with_original: bool, threads: int) -> _Plan:
    """One artifact file on each named target's runtime (default: the runtime whose artifacts have its suffix)."""
    if not p.is_file():
        raise UsageError(f"no such artifact: {p}")
    readers = _readers(p.suffix)
    chosen = [load_target(t).runtime for t in targets] if targets else \
        [next((r for r in readers if r.suffix == p.suffix), readers[0]).name]
    if any(name not in {r.name for r in readers} for name in chosen):
        raise UsageError(f"{p}: a {p.suffix} artifact runs on {', '.join(r.name for r in readers)} targets only "
                         f"(e.g. --target {_example_target(readers[0].name)})")
    openers = [(f"{p.name} on {runtime}", runtime, p.name, lambda r=runtime: open_artifact(p, r, threads))
               for runtime in dict.fromkeys(chosen)]
    notes = ["--original needs a bundle or a model; a lone artifact has no original to compare with"] if with_original else []
    return _Plan(openers, p.parent, p, notes)


def _plan_model(text: str, targets: list[str] | None, with_original: bool, threads: int, workdir: Path, progress) -> _Plan:
    """A model exported to FP32 ONNX on the fly, on each target's runtime; `--original`: the PyTorch model."""
    from .stages.export import export_huggingface
    from .stages.prepare import muted

    source = resolve_source(text if text else None)
    progress.stage(f"export {source.location} to ONNX (FP32) for benchmarking")
    with muted():
        export = export_huggingface(source, workdir)
    openers = []
    for t in targets or DEFAULT_TARGETS:
        runtime = load_target(t).runtime
        openers.append((f"fp32 on {runtime}", runtime, "model.onnx (fp32 export)",
                        lambda r=runtime: open_artifact(export.onnx_path, r, threads)))
    if with_original:
        names = [o.name for o in graph.load(export.onnx_path, load_external_data=False).graph.output]
        openers.insert(0, ("original", "pytorch", source.location,
                           lambda: TorchSession(export.model, export.library, names, threads)))
    return _Plan(openers, export.folder, export.onnx_path)


def _measure(plan: _Plan, feed: Feed, batches: list[int], duration: float, progress) -> list[Measured]:
    """Open each session (load time, first inference, memory), then time them all interleaved."""
    sessions: dict[str, Session] = {}
    loads: dict[str, float] = {}
    memory: dict[str, float] = {}
    first: dict[str, float] = {}
    for name, _, _, opener in plan.openers:
        progress.stage(f"load {name}")
        session, load_ms, before = _timed_open(opener)
        start = time.perf_counter()
        session.run(feed)
        first[name] = (time.perf_counter() - start) * 1e3
        sessions[name], loads[name] = session, load_ms
        memory[name] = max(0.0, benchmark.resident_mb() - before)
    progress.stage(f"measure {len(sessions)} session(s) interleaved for at least {duration:g} s")
    with rounds(progress, "latency round") as on_progress:
        latencies = benchmark.measure(sessions, feed, 50, duration, max(duration * 3, duration + 10), on_progress)
    latencies = {n: dataclasses.replace(lat, first_ms=first[n]) for n, lat in latencies.items()}
    throughput = {n: {1: benchmark.Throughput(1, 1e3 / lat.p50 if lat.p50 > 0 else None, lat.p50)} for n, lat in latencies.items()}
    if len(batches) > 1:
        progress.stage(f"throughput at batch {', '.join(str(b) for b in batches if b > 1)}")
        for n, by_batch in benchmark.measure_throughput(sessions, feed, batches, 10, duration / 2, duration * 2).items():
            throughput[n].update(by_batch)
    original = latencies.get("original")
    return [Measured(name, runtime, artifact, latencies[name], throughput[name], loads[name], memory[name],
                     sessions[name].settings,
                     (original.p50 / latencies[name].p50) if original is not None and latencies[name].p50 > 0 else None)
            for name, runtime, artifact, _ in plan.openers]


def _readers(suffix: str) -> list:
    """The registered runtimes that load a file with this suffix."""
    return [r for r in runtimes.all_runtimes() if suffix in r.reads] if suffix else []


def _example_target(runtime: str) -> str:
    """A built-in target of `runtime`, for a message."""
    from .config import list_targets

    return next((t.name for t in list_targets() if t.runtime == runtime), "NAME")


def _torch_original(model: str | None, artifact: Path, threads: int) -> Session:
    from .stages.export import load_reference

    source = resolve_source(model)
    return load_reference(source, _output_names(artifact), threads, _generative(_specs_of(artifact)))


def _output_names(artifact: Path) -> list[str]:
    if artifact.suffix == ".xml":
        return graph.ir_input_specs(artifact)[1]
    return [o.name for o in graph.load(artifact, load_external_data=False).graph.output]
