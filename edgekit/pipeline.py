"""`compile`: one model to verified, benchmarked artifacts for each target, in one bundle.

The pipeline, per target: export (once) -> caps (opset/IR, every target, before anything is built) ->
static shapes (targets that need them) -> optimise -> quantise/convert -> verify (on the target's
device, or, when it is not on this machine, the same artifact on the CPU) -> benchmark (the original and
every artifact whose device is here, interleaved) -> judge. `edgekit compile` is a thin layer over this.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from . import __version__, graph
from .bundle import Bundle, write_json
from .cache import BuildCache
from .cache import key as cache_key
from .config import Profile, Target, apply_overrides, load_profile, load_target, resolve_precision
from .devices import Availability, probe_all
from .data import LabelSpace, Samples
from .errors import InternalError, UsageError
from .judge import judge, verdict
from .junit import write_junit
from .progress import NullProgress, fraction_bar
from .report import NO_BENCH, Report, TargetResult
from .runtimes import Feed, Session, default_threads, open_artifact
from .source import CLASSIFICATION_TASKS, SourceModel, resolve_source
from .stages import benchmark, metrics, recovery, static_shapes, verify
from .stages.caps import check_caps
from .stages.fp16 import convert_fp16
from .stages.openvino_device import convert_openvino_device
from .stages.optimize import fuse_transformer
from .stages.ort_int8 import fold_biases
from .stages.prepare import Prepared, muted, prepare
from .stages.quantize_ort import quantize_onnxruntime
from .stages.quantize_ov import convert_openvino
from .stages.shape_fold import fold_shapes
from .verify_bundle import write_reference

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = Path("edgekit-out")


def default_output(source: SourceModel) -> Path:
    return DEFAULT_OUTPUT_ROOT / source.name


def _quiet_libraries() -> None:
    """Libraries log at warning level by default; a build shows their errors only. Nothing is imported here
    (a rebuild from the cache never imports transformers or nncf); nncf is quieted where it is imported."""
    for name in ("nncf", "optimum", "transformers", "torch.onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()


def _parse_shapes(shapes: dict[str, Sequence[int]] | Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    if not shapes:
        return {}
    if isinstance(shapes, dict):
        return {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    parsed = dict(graph.parse_shape_option(text) for text in shapes)
    return parsed


def build_artifact(target: Target, profile: Profile, prep: Prepared, out_dir: Path, workdir: Path,
                   variant: "Variant | None" = None) -> tuple[Path, dict, list[str]]:
    """Write the target's artifact into `out_dir`; return its path, quantisation settings and notes.

    `variant`: the graph and samples of a static-shape target (the prepared ones when None).
    """
    work = workdir / target.name
    work.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / target.artifact_name
    notes: list[str] = []
    if target.precision is not None:  # a device target: its own precision (config rule 5)
        return _build_device_artifact(target, profile, prep, artifact, work, variant)
    if target.runtime == "onnxruntime":
        base = prep.onnx_fp32
        settings: dict = {}
        if target.graph_fusions and prep.source.kind == "huggingface" and profile.precision != "int8":
            cfg = prep.source.config
            fused = fuse_transformer(base, work / "fused.onnx", cfg.get("model_type"), cfg.get("num_attention_heads", 0) or 0,
                                     cfg.get("hidden_size", 0) or 0)
            base = fused.path
            if fused.fused:
                settings["fusions"] = ", ".join(f"{k}×{v}" for k, v in sorted(fused.fused.items()))
            if fused.note:
                notes.append(fused.note)
        if profile.precision == "int8":
            result = quantize_onnxruntime(base, work, artifact, prep.samples.calibration, profile, prep.transformer,
                                          fused=base != prep.onnx_fp32)
            settings.update(result.settings)
            notes += result.notes
            if target.contrib_ops:
                shutil.copyfile(artifact, work / QDQ_COPY)  # what accuracy recovery reads
                settings.update(_fold_biases(artifact))
        else:
            folded = fold_shapes(base, artifact)
            if folded.changed:
                settings["shape_arithmetic"] = folded.describe()
            else:
                shutil.copyfile(base, artifact)
            notes += folded.notes
            settings["format"] = "FP32 ONNX"
        return artifact, settings, notes
    if target.runtime == "openvino":
        recipe = dataclasses.replace(profile, activations=target.activations) if target.activations else profile
        result = convert_openvino(prep.onnx_fp32, artifact, prep.samples.calibration, recipe, prep.transformer)
        return artifact, result.settings, notes + result.notes
    raise UsageError(f"target {target.name}: unknown runtime '{target.runtime}'")


@dataclass
class Variant:
    """A static-shape target's inputs: its fixed graph, samples padded to it and the original's outputs on them."""

    onnx_path: Path
    samples: Samples
    reference_outputs: list
    static: static_shapes.StaticShapes | None = None
    samples_key: str = ""  # the build-cache key of `samples`


def _build_device_artifact(target: Target, profile: Profile, prep: Prepared, artifact: Path, work: Path,
                           variant: Variant | None) -> tuple[Path, dict, list[str]]:
    precision = resolve_precision(target, profile)
    src = variant.onnx_path if variant is not None else prep.onnx_fp32
    calibration = variant.samples.calibration if variant is not None else prep.samples.calibration
    static = variant.static if variant is not None else None
    if target.runtime == "onnxruntime":
        if precision == "fp16":
            result = convert_fp16(src, artifact)
            return artifact, result.settings, result.notes
        if precision == "fp32":
            shutil.copyfile(src, artifact)
            return artifact, {"format": "FP32 ONNX"}, []
        raise UsageError(f"target {target.name}: ONNX Runtime targets build fp16 or fp32, not {precision}")
    result = convert_openvino_device(src, artifact, target, precision, calibration, profile, prep.transformer, static)
    return artifact, result.settings, result.notes


def accuracy_met(budgets, fidelity: verify.Fidelity, task_figures: dict) -> bool:
    """Whether every applicable accuracy budget (not latency or size) passes."""
    checks = judge(budgets, fidelity.cosine_min, fidelity.top1_agreement, None, 0, task_figures)
    return all(c.passed for c in checks if c.applicable and c.budget not in ("max_latency_ms", "max_size_mb", "require_measured"))


QDQ_COPY = "qdq.onnx"  # the INT8 artifact before its biases were folded (stages/ort_int8.py)


def _fold_biases(artifact: Path) -> dict:
    """The finishing step of an INT8 ONNX Runtime artifact (stages/ort_int8.py); its settings entry."""
    folded = fold_biases(artifact)
    return {"bias_folded": f"{folded} weight MatMuls as com.microsoft.MatMulIntegerToFloat with their bias"} if folded else {}


def _recover_onnxruntime(target: Target, profile: Profile, prep: Prepared, samples: Samples, artifact: Path,
                         before: float, workdir: Path, threads: int, evaluate, progress) -> recovery.Recovery:
    """Rank the artifact's quantised layers, then rebuild with the fewest FP32 layers that meet the budget
    (stages/recovery.py); the best artifact found (QDQ) is written over `artifact`."""
    qdq = workdir / target.name / QDQ_COPY
    qdq = qdq if qdq.is_file() else artifact
    ranked = recovery.rank_onnxruntime(prep.onnx_fp32, qdq, samples.evaluation[:8])
    candidates = len(recovery.quantised_layers(qdq))

    def rebuild(keep: list[str]) -> Path:
        folder = workdir / target.name / f"recovery-{len(keep)}"
        folder.mkdir(parents=True, exist_ok=True)
        quantize_onnxruntime(prep.onnx_fp32, folder, folder / "model.onnx", samples.calibration, profile, prep.transformer,
                             fused=False, keep_fp32=keep)
        return folder / "model.onnx"

    def score(candidate: Path) -> tuple[float, bool]:
        fid, figures = evaluate(open_artifact(candidate, "onnxruntime", threads, disabled_optimizers=target.disabled_optimizers))
        return fid.cosine_min, accuracy_met(profile.budgets, fid, figures)

    def show(attempt: recovery.Attempt) -> None:
        progress.note(f"{attempt.fp32_layers} layer(s) FP32: cosine_min {attempt.score:.4f} "
                      f"{'meets' if attempt.passed else 'misses'} the budget ({attempt.seconds:.1f} s)")

    found, best = recovery.search([name for name, _ in ranked], rebuild, score, before,
                                  max(1, int(profile.recovery_max_fp32_fraction * candidates)), profile.recovery_seconds, show)
    found.candidates = candidates
    if best is not None and found.kept_fp32:
        shutil.copyfile(best, artifact)
    return found


def _recovery_note(found: recovery.Recovery) -> str:
    share = f"{len(found.kept_fp32)} of {found.candidates} quantised layers kept FP32"
    if found.recovered:
        return f"recovered: {share}; cosine_min {found.before:.4f} -> {found.after:.4f}"
    return (f"recovery could not meet the budget ({found.note}); best found: {share}, "
            f"cosine_min {found.before:.4f} -> {found.after:.4f}")


def _artifact_files(artifact: Path) -> list[Path]:
    return [artifact] + ([artifact.with_suffix(".bin")] if artifact.suffix == ".xml" else [])


def _artifact_size(artifact: Path) -> int:
    return sum(p.stat().st_size for p in _artifact_files(artifact) if p.exists())


def _artifact_key(target: Target, profile: Profile, precision: str, variant: Variant | None, samples_key: str) -> str:
    """What determines a target's artifact: the samples' key (model, data, options, versions, CPU), the target's
    and the profile's settings (not names, descriptions, benchmark or runtime-only settings), the precision and
    static shapes."""
    ignored = ("name", "description", "source", "length_buckets", "disabled_optimizers")
    return cache_key("artifact", {
        "samples": variant.samples_key if variant is not None else samples_key,
        "target": {k: v for k, v in dataclasses.asdict(target).items() if k not in ignored},
        "profile": {k: v for k, v in dataclasses.asdict(profile).items() if k not in ignored and not k.startswith("bench_")},
        "precision": precision,
        "static": variant.static.to_dict() if variant is not None and variant.static is not None else None,
    })


def _copy_preprocessors(src: Path | None, dst: Path, source_kind: str) -> None:
    from .stages.export import PREPROCESSOR_FILES

    if src is None:
        return
    for name in PREPROCESSOR_FILES:
        if (src / name).is_file() and (source_kind == "huggingface" or name != "config.json"):
            shutil.copy2(src / name, dst / name)


def _check_labels(samples: Samples, reference_outputs: list, data: Path | None) -> None:
    """Every evaluation label is a class the classifier outputs."""
    if not samples.labelled or not reference_outputs:
        return
    classes = int(reference_outputs[0][0].size)
    bad = [y for y in samples.evaluation_labels if not 0 <= y < classes]
    if bad:
        raise UsageError(f"{data}: label id {bad[0]} is not a class of the model, which outputs {classes} classes (ids 0..{classes - 1})")


@dataclass
class _Built:
    """One target's artifact, built and verified, waiting for the benchmark."""

    target: Target
    artifact: Path
    qsettings: dict
    notes: list[str]
    session: Session
    load_ms: float
    seconds: float
    fidelity: verify.Fidelity
    task_figures: dict
    present: Availability  # is the target's device here (else: verified on `device`, latency not measured)
    device: str  # where the artifact ran
    variant: Variant | None
    precompiled: dict | None
    first_ms: float  # the first inference after loading
    memory_mb: float  # resident memory added by loading and the first inference


@dataclass
class _Context:
    """What every target's build shares within one compile."""

    prep: Prepared
    profile: Profile
    store: BuildCache
    bundle: Bundle
    workdir: Path
    threads: int
    progress: object
    classifier: bool
    task_kind: str  # "classifier" | "embedding" | "other"


def _build_target(ctx: _Context, target: Target, precision: str, present: Availability, variant: Variant | None) -> _Built:
    """Build (or take from the cache), load, verify and, when it misses an accuracy budget, recover one target."""
    prep, prof, progress, threads = ctx.prep, ctx.profile, ctx.progress, ctx.threads
    started = time.monotonic()
    samples = variant.samples if variant is not None else prep.samples
    expected = variant.reference_outputs if variant is not None else prep.reference_outputs
    out_dir = ctx.bundle.folder(target.name)
    artifact_key = _artifact_key(target, prof, precision, variant, prep.samples_key)
    cached = ctx.store.fetch("artifact", artifact_key, out_dir, f"{target.name} artifact")
    if cached is not None:
        progress.stage(f"{target.name}: {precision} artifact reused from the build cache")
        artifact, qsettings, notes = out_dir / target.artifact_name, cached["quantization"], cached["notes"]
    else:
        progress.stage(f"{target.name}: build {precision} artifact for {target.runtime} on {target.device}")
        with muted():
            artifact, qsettings, notes = build_artifact(target, prof, prep, out_dir, ctx.workdir, variant)
    _copy_preprocessors(prep.preprocess_dir, out_dir, prep.source.kind)
    # Without its device, the same artifact file runs on the verify device (FP32 there): numerics only.
    device = target.device if present.present else target.verify_device
    provider = (target.execution_provider or "CPUExecutionProvider") if present.present else "CPUExecutionProvider"
    float_precision = prof.float_precision if target.precision is None and device == "CPU" else "f32"

    def load() -> Session:
        return open_artifact(artifact, target.runtime, threads, device, provider, target.performance_hint, float_precision,
                             target.length_buckets, target.disabled_optimizers)

    rss_before = benchmark.resident_mb()
    load_start = time.perf_counter()
    session = load()
    load_ms = (time.perf_counter() - load_start) * 1e3
    first_start = time.perf_counter()
    session.run(samples.benchmark)
    first_ms = (time.perf_counter() - first_start) * 1e3
    memory_mb = max(0.0, benchmark.resident_mb() - rss_before)
    precompiled = None
    if target.precompiled_blob:
        precompiled = (_export_blob(session, target, out_dir) if present.present else
                       {"written": False, "reason": f"not written: no {target.device} on this machine; the blob is "
                                                     "compiled on the device (rerun there, or compile model.xml on it)"})
    write_json(out_dir / "runtime.json", _runtime_json(target, artifact, session, present))
    progress.stage(f"{target.name}: verify against the original"
                   + ("" if present.present else f" on {device} ({target.device} not present here)"))
    masks = [feed.get("attention_mask") for feed in samples.evaluation]

    def evaluate(candidate: Session) -> tuple[verify.Fidelity, dict]:
        outputs = verify.run_ordered(candidate, samples.evaluation, prep.output_names)
        fid = verify.compare(expected, outputs, prep.output_names, ctx.classifier, masks)
        task = metrics.evaluate(expected, outputs, prep.output_names, ctx.task_kind, samples.evaluation_labels, masks)
        fid.add_task(task)
        return fid, task.budget_figures()

    fidelity, figures = evaluate(session)
    if (cached is None and prof.recovery and target.precision is None and precision == "int8"
            and not accuracy_met(prof.budgets, fidelity, figures)):
        progress.stage(f"{target.name}: INT8 misses an accuracy budget (cosine_min {fidelity.cosine_min:.4f}); "
                       f"searching for the fewest layers to keep FP32 (bound: {prof.recovery_seconds:g} s)")
        with muted():
            if target.runtime == "onnxruntime":
                found = _recover_onnxruntime(target, prof, prep, samples, artifact, fidelity.cosine_min, ctx.workdir,
                                             threads, evaluate, progress)
                if found.kept_fp32 and target.contrib_ops:  # the rebuilt artifact is QDQ: finish it as the first one
                    qsettings.pop("bias_folded", None)
                    qsettings.update(_fold_biases(artifact))
            else:
                found = recovery.recover_openvino(
                    prep.onnx_fp32, artifact, samples.calibration, samples.evaluation, expected,
                    prof.budgets.min_cosine, fidelity.cosine_min, prep.transformer,
                    "PERFORMANCE" if (target.activations or prof.activations) == "symmetric" else "MIXED",
                    max(1, int(prof.recovery_seconds // 60)))
        qsettings["recovery"] = found.to_dict()
        notes.append(_recovery_note(found))
        if found.kept_fp32:  # the best artifact found replaces the plain one
            session = load()
            fidelity, figures = evaluate(session)
            session.run(samples.benchmark)
    if cached is None:  # the artifact as built, recovery included, for the next build with the same inputs
        ctx.store.store("artifact", artifact_key, {f.name: f for f in _artifact_files(artifact)},
                        {"quantization": qsettings, "notes": notes}, f"{target.name} artifact")
    # What `edgekit verify` reruns: one input and this artifact's own outputs on it, with a tolerance.
    write_reference(out_dir, session, samples.evaluation[0], device, provider)
    return _Built(target, artifact, qsettings, notes, session, load_ms, time.monotonic() - started, fidelity, figures,
                  present, device, variant, precompiled, first_ms, memory_mb)


BLOB_NOTE = ("a precompiled blob loads only on the same device with the same OpenVINO and driver versions (listed here); "
             "elsewhere compile model.xml on the device instead")


def _export_blob(session: Session, target: Target, out_dir: Path) -> dict:
    """The compiled model as the device holds it (`export_model`), with the versions it is bound to."""
    blob = out_dir / "model.blob"
    export = getattr(session, "export_blob", None)
    if export is None:
        return {"written": False, "reason": f"{target.runtime} cannot export a compiled model"}
    versions = export(blob)
    return {"written": True, "file": f"{target.name}/{blob.name}", **versions, "portable": False, "note": BLOB_NOTE}


def _runtime_json(target: Target, artifact: Path, session: Session, present: Availability) -> dict:
    """How to run the artifact: the settings it ran with, or, without its device, the device's and why."""
    if present.present:
        return {"target": target.name, "artifact": artifact.name, **session.settings}
    device = ({"execution_provider": target.execution_provider} if target.runtime == "onnxruntime"
              else {"PERFORMANCE_HINT": target.performance_hint})
    return {"target": target.name, "artifact": artifact.name, "runtime": target.runtime, "device": target.device, **device,
            "measured": False, "not_measured": present.reason, "verified_with": session.settings}


def _static_variants(fixed: dict[str, static_shapes.StaticShapes], prep: Prepared, workdir: Path, progress
                     ) -> dict[str, Variant]:
    """For each static-shape target, its fixed graph and padded samples, and the original's outputs on them.

    Targets with the same shapes share one; shapes that are already the prepared ones reuse its samples.
    """
    variants: dict[str, Variant] = {}
    by_shape: dict[tuple, Variant] = {}
    for name, static in fixed.items():
        key = tuple((s.name, tuple(s.shape)) for s in static.specs)
        if key not in by_shape:
            if [tuple(s.shape) for s in static.specs] == [tuple(s.shape) for s in prep.specs] or prep.samples_for is None:
                by_shape[key] = Variant(prep.onnx_fp32, prep.samples, prep.reference_outputs, static, prep.samples_key)
            else:
                progress.stage(f"static shapes {static.describe()}: padded samples, and the original run on them")
                path = static_shapes.write_static_onnx(prep.onnx_fp32, workdir / f"static-{len(by_shape)}.onnx", static)
                samples, outputs, samples_key = prep.samples_for(static.specs)
                by_shape[key] = Variant(path, samples, outputs, static, samples_key)
        variants[name] = dataclasses.replace(by_shape[key], static=static)
    return variants


class _OwnFeed:
    """A session timed on its own benchmark feed: a static-shape artifact cannot take the shared one when
    the shapes differ. Batched feeds (throughput) are refused, as its batch is fixed."""

    def __init__(self, session: Session, feed: Feed, shared: Feed):
        self._session, self._feed, self._shared = session, feed, shared
        self.runtime, self.output_names, self.settings = session.runtime, session.output_names, session.settings

    def run(self, feed: Feed) -> list:
        if feed is not self._shared:
            raise UsageError("static shapes: this artifact's batch is fixed at 1")
        return self._session.run(self._feed)


def _own_feed(session: Session, variant: Variant | None, shared: Feed) -> Session:
    if variant is None or variant.samples.benchmark is shared:
        return session
    own = variant.samples.benchmark
    if {k: v.shape for k, v in own.items()} == {k: v.shape for k, v in shared.items() if k in own}:
        return session
    return _OwnFeed(session, own, shared)


def _benchmark(built: list[_Built], prep: Prepared, prof: Profile, progress
               ) -> tuple[dict[str, benchmark.Latency], dict[str, dict[int, benchmark.Throughput]]]:
    """Latency of the original and every artifact whose device is here, interleaved; throughput at batch sizes."""
    measured = [b for b in built if b.present.present]
    unmeasured = [b.target.name for b in built if not b.present.present]
    progress.stage(f"benchmark the original and {len(measured)} artifact(s), interleaved"
                   + (f" (not measured here: {', '.join(unmeasured)})" if unmeasured else ""))
    sessions: dict[str, Session] = {"original": prep.reference,
                                    **{b.target.name: _own_feed(b.session, b.variant, prep.samples.benchmark) for b in measured}}
    with fraction_bar(progress, "benchmark") as on_progress:
        latencies = benchmark.measure(sessions, prep.samples.benchmark, prof.bench_min_runs, prof.bench_min_seconds,
                                      prof.bench_max_seconds, on_progress)
    first_ms = {"original": float("nan"), **{b.target.name: b.first_ms for b in built}}  # the original ran before it could be timed cold
    latencies = {name: dataclasses.replace(lat, first_ms=first_ms[name]) for name, lat in latencies.items()}
    throughput = {name: {1: benchmark.Throughput(1, 1e3 / lat.p50 if lat.p50 > 0 else None, lat.p50)}
                  for name, lat in latencies.items()}
    if any(b > 1 for b in prof.bench_batch_sizes):
        progress.stage(f"throughput at batch {', '.join(str(b) for b in prof.bench_batch_sizes if b > 1)}")
        for name, by_batch in benchmark.measure_throughput(sessions, prep.samples.benchmark, list(prof.bench_batch_sizes),
                                                           max_seconds=prof.bench_max_seconds).items():
            throughput[name].update(by_batch)
    return latencies, throughput


def compile(
    model: str | Path | None = None,
    targets: Sequence[str] = ("cpu",),
    profile: str = "balanced",
    output: str | Path | None = None,
    task: str | None = None,
    shapes: dict[str, Sequence[int]] | Iterable[str] | None = None,
    data: str | Path | None = None,
    threads: int | None = None,
    progress=None,
    text_column: str = "text",
    label_column: str | None = None,
    overrides: dict | None = None,
    junit: str | Path | None = None,
    require_measured: bool = False,
    trust_remote_code: bool = False,
    force: bool = False,
    no_bench: bool = False,
    cache: bool = True,
) -> Report:
    """Compile `model` for each target and return the report (also written to the bundle).

    `model`: a Hugging Face model folder, a hub id, or an `.onnx` file; None for the embedded default.
    `text_column` / `label_column`: the fields of a `.jsonl`/`.csv` `data` file (label: `label` if present).
    `overrides`: budgets and data sizes that replace the profile's (see `config.apply_overrides`), e.g.
    `{"min_cosine": 0.995, "max_drop": {"accuracy": 0.01}, "seed": 1}`.
    `junit`: also write a JUnit XML file there (one test case per target and budget), even on `fail`.
    `require_measured`: a target whose device is absent here (latency not measured) fails the verdict;
    without it such a target is judged on what was measured and listed in `report.json`'s `unmeasured`.
    `trust_remote_code`: let a Hugging Face model run the Python files it ships (refused otherwise).
    `force`: accept an `output` that is `/`, the home folder or a folder of other files; the bundle then
    goes into its subfolder `edgekit-bundle` (see `bundle.output_folder`): nothing there is deleted.
    `no_bench`: build and verify only; no latency is measured (latency budgets are not checked).
    `cache`: reuse and store expensive steps in the build cache (`edgekit.cache`; EDGEKIT_CACHE_DIR).
    Raises UsageError (bad input) or InternalError; a missed budget is `report.verdict == "fail"`.
    """
    progress = progress or NullProgress()
    if no_bench and require_measured:
        raise UsageError("--require-measured needs the benchmark: drop --no-bench, or drop --require-measured")
    _quiet_libraries()
    target_list = [load_target(t) for t in dict.fromkeys(targets or ("cpu",))]
    prof = apply_overrides(load_profile(profile), overrides)
    precisions = {t.name: resolve_precision(t, prof) for t in target_list}  # one a target cannot build: exit 2 now
    shape_map = _parse_shapes(shapes)
    data_path = Path(data) if data is not None else None
    if data_path is not None and not data_path.exists():
        raise UsageError(f"--data: no such file or folder: {data_path}")
    junit_path = Path(junit) if junit is not None else None
    if junit_path is not None and junit_path.is_dir():
        raise UsageError(f"--junit {junit_path}: is a folder; give a file path, e.g. {junit_path / 'edgekit.xml'}")
    source = resolve_source(model, task, trust_remote_code=trust_remote_code)
    if source.kind == "onnx":
        check_caps(source.path, target_list, source.path.name)
    out = Path(output) if output is not None else default_output(source)
    threads = threads or default_threads()
    store = BuildCache(enabled=cache)
    with Bundle(out, force=force) as bundle, tempfile.TemporaryDirectory(prefix="edgekit-work-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workdir = Path(tmp)
        classifier = source.task in CLASSIFICATION_TASKS
        label_space = LabelSpace.from_config(source.config) if classifier else None
        prep = prepare(source, prof, shape_map, data_path, threads, workdir, progress, store, label_space, text_column,
                       label_column)
        if source.kind == "huggingface":
            check_caps(prep.onnx_fp32, target_list, "the exported graph")
        fixed = {t.name: static_shapes.resolve(prep.specs, t.name, source.kind, prep.modality, source.config or {},
                                               prof.sequence_length, frozenset(shape_map))
                 for t in target_list if t.static_shapes}
        here = probe_all(target_list)
        if prep.samples.ignored_labels:
            prep.samples.notes.append(f"the labels in --data are not used: task {source.task or 'unknown'} is not a classifier "
                                      "(give --task text-classification or image-classification if it is one)")
        task_kind = "classifier" if classifier else "embedding" if source.task == "feature-extraction" else "other"
        if classifier:
            _check_labels(prep.samples, prep.reference_outputs, data_path)
        variants = _static_variants(fixed, prep, workdir, progress)

        ctx = _Context(prep, prof, store, bundle, workdir, threads, progress, classifier, task_kind)
        built = [_build_target(ctx, t, precisions[t.name], here[t.name], variants.get(t.name)) for t in target_list]
        latencies, throughput = ({}, {}) if no_bench else _benchmark(built, prep, prof, progress)
        original = latencies.get("original")
        results = []
        for b in built:
            target, fidelity = b.target, b.fidelity
            lat = latencies.get(target.name)  # None: the device is not here (or --no-bench), latency not measured
            why_not = NO_BENCH if no_bench else b.present.reason
            size = _artifact_size(b.artifact)
            checks = judge(prof.budgets, fidelity.cosine_min, fidelity.top1_agreement, lat.p90 if lat else None, size,
                           b.task_figures, not_measured=why_not, require_measured=require_measured)
            results.append(TargetResult(
                target=target.name, profile=prof.name, runtime=target.runtime, device=target.device,
                precision=precisions[target.name], artifact=b.artifact.relative_to(bundle.root).as_posix(), size_bytes=size,
                latency=lat, speedup_p50=(original.p50 / lat.p50 if lat.p50 > 0 else 0.0) if lat and original else None, accuracy=fidelity,
                checks=checks, verdict=verdict(checks), load_ms=b.load_ms if lat else None, quantization=b.qsettings,
                runtime_settings=b.session.settings, notes=b.notes, build_seconds=b.seconds,
                throughput=throughput.get(target.name, {}), memory_mb=b.memory_mb if lat else None,
                not_measured="" if lat else why_not, verified_on=f"{target.runtime} {b.device}",
                static_shapes=b.variant.static.to_dict() if b.variant is not None and b.variant.static is not None else None,
                precompiled=b.precompiled,
            ))
        source_info = {"kind": source.kind, "location": source.location, "revision": source.revision,
                       "weights_sha256": source.weight_files, "weights_format": source.weights_format}
        bench_feed = prep.samples.benchmark
        report = Report(
            edgekit_version=__version__,
            source=source_info,
            task=source.task or "unknown",
            profile=prof.name,
            original={"runtime": prep.reference.runtime, "precision": "fp32",
                      "size_bytes": prep.onnx_fp32.stat().st_size, "settings": prep.reference.settings,
                      "export_check_max_abs_error": prep.export_error},
            original_latency=original,
            original_throughput=throughput.get("original", {}),
            data={"origin": prep.samples.origin, "synthetic": prep.samples.synthetic,
                  "calibration_samples": len(prep.samples.calibration), "eval_samples": len(prep.samples.evaluation),
                  "seed": prof.seed, "labelled": prep.samples.labelled, "notes": prep.samples.notes},
            benchmark={"skipped": no_bench, "batch": 1, "batch_sizes": list(prof.bench_batch_sizes), "input": ", ".join(f"{k} {list(v.shape)}" for k, v in bench_feed.items()),
                       "threads": threads, "min_runs": prof.bench_min_runs, "min_seconds": prof.bench_min_seconds,
                       "max_seconds": prof.bench_max_seconds, "interleaved": True},
            targets=results,
            notes=list(prep.samples.notes),
            cache=store.summary(),
        )
        write_json(bundle.root / "report.json", report.to_dict())
        (bundle.root / "report.md").write_text(report.to_markdown())
        precompiled = {b.target.name: b.precompiled for b in built if b.precompiled is not None}
        bundle.write_manifest(source_info, {"edgekit": __version__, "task": report.task, "profile": prof.name,
                                            "targets": [t.name for t in target_list],
                                            **({"unmeasured": report.unmeasured} if report.unmeasured else {}),
                                            **({"precompiled": precompiled} if precompiled else {})})
        report.bundle = bundle.commit()
    if junit_path is not None:
        write_junit(report, junit_path)
    return report
