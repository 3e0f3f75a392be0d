"""`compile`: one model to verified, benchmarked artifacts for each target, in one bundle.

The pipeline, per target: export (once) -> optimise -> quantise/convert -> verify -> benchmark
(all artifacts and the original, interleaved) -> judge. `edgekit compile` is a thin layer over this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from . import __version__, graph
from .bundle import Bundle, write_json
from .config import Profile, Target, apply_overrides, load_profile, load_target
from .data import LabelSpace, Samples, build_samples
from .errors import InternalError, UsageError
from .judge import judge, verdict
from .junit import write_junit
from .progress import NullProgress, fraction_bar
from .report import Report, TargetResult
from .runtimes import OrtSession, Session, TorchSession, default_threads, open_artifact
from .source import CLASSIFICATION_TASKS, SourceModel, resolve_source
from .stages import benchmark, metrics, verify
from .stages.export import ExportResult, check_export, export_huggingface
from .stages.optimize import fuse_transformer
from .stages.quantize_ort import quantize_onnxruntime
from .stages.quantize_ov import convert_openvino

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = Path("edgekit-out")
EXPORT_CHECK_SAMPLES = 8


@dataclass
class Prepared:
    """Everything the targets share: the FP32 graph, the reference, the samples."""

    source: SourceModel
    onnx_fp32: Path
    specs: list[graph.InputSpec]
    reference: Session
    output_names: list[str]
    samples: Samples
    preprocess_dir: Path | None
    transformer: bool
    export_error: float | None


def default_output(source: SourceModel) -> Path:
    return DEFAULT_OUTPUT_ROOT / source.name


def _quiet_libraries() -> None:
    for name in ("nncf", "optimum", "transformers", "torch.onnx", "onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        import nncf

        nncf.set_log_level(logging.ERROR)
    except ImportError:
        pass


@contextlib.contextmanager
def muted():
    """Hold back what libraries print (optimum notices, NNCF progress bars) unless edgekit logs at INFO.

    The held-back text goes to the debug log, so `--debug` still shows everything.
    """
    if log.isEnabledFor(logging.INFO):
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        if buffer.getvalue().strip():
            log.debug("library output:\n%s", buffer.getvalue())


def _parse_shapes(shapes: dict[str, Sequence[int]] | Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    if not shapes:
        return {}
    if isinstance(shapes, dict):
        return {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    parsed = dict(graph.parse_shape_option(text) for text in shapes)
    return parsed


def _load_preprocessors(folder: Path, modality: str):
    """(tokenizer, image_processor callable) found in `folder`, either may be None."""
    tokenizer = image_processor = None
    if modality == "text" or (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except Exception as exc:
            if modality == "text":
                raise UsageError(f"{folder}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from exc
    if modality == "image" and (folder / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(folder))
        image_processor = lambda image: {"pixel_values": processor(images=image, return_tensors="np")["pixel_values"].astype("float32")}  # noqa: E731
    return tokenizer, image_processor


def prepare(source: SourceModel, profile: Profile, shapes: dict[str, tuple[int, ...]], data: Path | None,
            threads: int, workdir: Path, progress, label_space: LabelSpace | None = None,
            text_column: str = "text", label_column: str | None = None) -> Prepared:
    export: ExportResult | None = None
    export_error = None
    if source.kind == "huggingface":
        progress.stage(f"export {source.location} ({source.task}) to ONNX")
        with muted():
            export = export_huggingface(source, workdir)
        onnx_path, preprocess_dir = export.onnx_path, export.folder
    else:
        onnx_path, preprocess_dir = source.path, source.path.parent
    model = graph.load(onnx_path)
    specs = graph.resolve_shapes(graph.input_specs(model), shapes)
    if source.kind == "onnx":
        graph.require_static(specs)
        try:
            reference: Session = OrtSession(source.path, threads)
        except InternalError as exc:
            raise UsageError(f"{source.location}: ONNX Runtime cannot load it ({exc}); is the file complete?") from exc
    if shapes:
        model = graph.apply_shapes(model, specs)
        fixed = workdir / "fixed_shapes.onnx"
        graph.onnx.save(model, str(fixed))
        onnx_path = fixed
    transformer = graph.looks_like_transformer(model)
    del model
    modality = source.modality
    tokenizer, image_processor = _load_preprocessors(preprocess_dir, modality) if (
        source.kind == "huggingface" or any(preprocess_dir.glob("tokenizer*.json"))) else (None, None)
    if source.kind == "onnx" and tokenizer is None and image_processor is None:
        modality = "tensor"
    progress.stage("prepare calibration and evaluation data")
    samples = build_samples(
        specs, modality, data, profile.calibration_samples, profile.eval_samples, profile.seed,
        profile.sequence_length, tokenizer=tokenizer, image_processor=image_processor,
        max_length=min(getattr(tokenizer, "model_max_length", 512) or 512, 512),
        label_space=label_space, text_column=text_column, label_column=label_column,
    )
    for note in samples.notes:
        progress.note(note)
    if export is not None:
        output_names = [o.name for o in graph.load(onnx_path, load_external_data=False).graph.output]
        reference = TorchSession(export.model, export.library, output_names, threads)
        progress.stage("check the ONNX export against PyTorch")
        export_error = check_export(reference, OrtSession(onnx_path, threads), samples.evaluation[:EXPORT_CHECK_SAMPLES])
    output_names = reference.output_names
    return Prepared(source, onnx_path, specs, reference, output_names, samples, preprocess_dir, transformer, export_error)


def build_artifact(target: Target, profile: Profile, prep: Prepared, out_dir: Path, workdir: Path) -> tuple[Path, dict, list[str]]:
    """Write the target's artifact into `out_dir`; return its path, quantisation settings and notes."""
    work = workdir / target.name
    work.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / target.artifact_name
    notes: list[str] = []
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
        else:
            shutil.copyfile(base, artifact)
            settings["format"] = "FP32 ONNX"
        return artifact, settings, notes
    if target.runtime == "openvino":
        result = convert_openvino(prep.onnx_fp32, artifact, prep.samples.calibration, profile, prep.transformer)
        return artifact, result.settings, notes + result.notes
    raise UsageError(f"target {target.name}: unknown runtime '{target.runtime}'")


def _artifact_size(artifact: Path) -> int:
    files = [artifact] + ([artifact.with_suffix(".bin")] if artifact.suffix == ".xml" else [])
    return sum(p.stat().st_size for p in files if p.exists())


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
) -> Report:
    """Compile `model` for each target and return the report (also written to the bundle).

    `model`: a Hugging Face model folder, a hub id, or an `.onnx` file; None for the embedded default.
    `text_column` / `label_column`: the fields of a `.jsonl`/`.csv` `data` file (label: `label` if present).
    `overrides`: budgets and data sizes that replace the profile's (see `config.apply_overrides`), e.g.
    `{"min_cosine": 0.995, "max_drop": {"accuracy": 0.01}, "seed": 1}`.
    `junit`: also write a JUnit XML file there (one test case per target and budget), even on `fail`.
    Raises UsageError (bad input) or InternalError; a missed budget is `report.verdict == "fail"`.
    """
    progress = progress or NullProgress()
    _quiet_libraries()
    target_list = [load_target(t) for t in dict.fromkeys(targets or ("cpu",))]
    prof = apply_overrides(load_profile(profile), overrides)
    shape_map = _parse_shapes(shapes)
    data_path = Path(data) if data is not None else None
    if data_path is not None and not data_path.exists():
        raise UsageError(f"--data: no such file or folder: {data_path}")
    junit_path = Path(junit) if junit is not None else None
    if junit_path is not None and junit_path.is_dir():
        raise UsageError(f"--junit {junit_path}: is a folder; give a file path, e.g. {junit_path / 'edgekit.xml'}")
    source = resolve_source(model, task)
    out = Path(output) if output is not None else default_output(source)
    threads = threads or default_threads()
    with Bundle(out) as bundle, tempfile.TemporaryDirectory(prefix="edgekit-work-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workdir = Path(tmp)
        classifier = source.task in CLASSIFICATION_TASKS
        label_space = LabelSpace.from_config(source.config) if classifier else None
        prep = prepare(source, prof, shape_map, data_path, threads, workdir, progress, label_space, text_column, label_column)
        if prep.samples.ignored_labels:
            prep.samples.notes.append(f"the labels in --data are not used: task {source.task or 'unknown'} is not a classifier "
                                      "(give --task text-classification or image-classification if it is one)")
        progress.stage(f"run the original ({prep.reference.runtime}) on {len(prep.samples.evaluation)} evaluation samples")
        reference_outputs = verify.run_all(prep.reference, prep.samples.evaluation)
        task_kind = "classifier" if classifier else "embedding" if source.task == "feature-extraction" else "other"
        if classifier:
            _check_labels(prep.samples, reference_outputs, data_path)
        masks = [feed.get("attention_mask") for feed in prep.samples.evaluation]
        task_figures: dict[str, dict] = {}

        built: list[tuple[Target, Path, dict, list[str], Session, float, float, verify.Fidelity]] = []
        memory_mb: dict[str, float] = {}
        first_ms: dict[str, float] = {"original": float("nan")}  # the original ran before it could be timed cold
        for target in target_list:
            started = time.monotonic()
            progress.stage(f"{target.name}: build {prof.precision} artifact for {target.runtime} on {target.device}")
            out_dir = bundle.folder(target.name)
            with muted():
                artifact, qsettings, notes = build_artifact(target, prof, prep, out_dir, workdir)
            _copy_preprocessors(prep.preprocess_dir, out_dir, source.kind)
            rss_before = benchmark.resident_mb()
            load_start = time.perf_counter()
            session = open_artifact(artifact, target.runtime, threads, target.device, target.execution_provider or "CPUExecutionProvider",
                                    target.performance_hint)
            load_ms = (time.perf_counter() - load_start) * 1e3
            first_start = time.perf_counter()
            session.run(prep.samples.benchmark)
            first_ms[target.name] = (time.perf_counter() - first_start) * 1e3
            memory_mb[target.name] = max(0.0, benchmark.resident_mb() - rss_before)
            write_json(out_dir / "runtime.json", {"target": target.name, "artifact": artifact.name, **session.settings})
            progress.stage(f"{target.name}: verify against the original")
            candidate_outputs = verify.run_ordered(session, prep.samples.evaluation, prep.output_names)
            fidelity = verify.compare(reference_outputs, candidate_outputs, prep.output_names, classifier)
            task = metrics.evaluate(reference_outputs, candidate_outputs, prep.output_names, task_kind,
                                    prep.samples.evaluation_labels, masks)
            fidelity.add_task(task)
            task_figures[target.name] = task.budget_figures()
            built.append((target, artifact, qsettings, notes, session, load_ms, time.monotonic() - started, fidelity))

        progress.stage(f"benchmark the original and {len(built)} artifact(s), interleaved")
        sessions: dict[str, Session] = {"original": prep.reference, **{b[0].name: b[4] for b in built}}
        with fraction_bar(progress, "benchmark") as on_progress:
            latencies = benchmark.measure(sessions, prep.samples.benchmark, prof.bench_min_runs, prof.bench_min_seconds,
                                          prof.bench_max_seconds, on_progress)
        latencies = {name: dataclasses.replace(lat, first_ms=first_ms[name]) for name, lat in latencies.items()}
        throughput = {name: {1: benchmark.Throughput(1, 1e3 / lat.p50 if lat.p50 > 0 else None, lat.p50)}
                      for name, lat in latencies.items()}
        if any(b > 1 for b in prof.bench_batch_sizes):
            progress.stage(f"throughput at batch {', '.join(str(b) for b in prof.bench_batch_sizes if b > 1)}")
            for name, by_batch in benchmark.measure_throughput(sessions, prep.samples.benchmark, list(prof.bench_batch_sizes),
                                                               max_seconds=prof.bench_max_seconds).items():
                throughput[name].update(by_batch)
        original = latencies["original"]
        results = []
        for target, artifact, qsettings, notes, session, load_ms, seconds, fidelity in built:
            lat = latencies[target.name]
            size = _artifact_size(artifact)
            checks = judge(prof.budgets, fidelity.cosine_min, fidelity.top1_agreement, lat.p90, size, task_figures[target.name])
            results.append(TargetResult(
                target=target.name, profile=prof.name, runtime=target.runtime, device=target.device,
                precision=prof.precision, artifact=artifact.relative_to(bundle.root).as_posix(), size_bytes=size,
                latency=lat, speedup_p50=original.p50 / lat.p50 if lat.p50 > 0 else 0.0, accuracy=fidelity,
                checks=checks, verdict=verdict(checks), load_ms=load_ms, quantization=qsettings,
                runtime_settings=session.settings, notes=notes, build_seconds=seconds,
                throughput=throughput[target.name], memory_mb=memory_mb.get(target.name),
            ))
        source_info = {"kind": source.kind, "location": source.location, "revision": source.revision,
                       "weights_sha256": source.weight_files}
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
            original_throughput=throughput["original"],
            data={"origin": prep.samples.origin, "synthetic": prep.samples.synthetic,
                  "calibration_samples": len(prep.samples.calibration), "eval_samples": len(prep.samples.evaluation),
                  "seed": prof.seed, "labelled": prep.samples.labelled, "notes": prep.samples.notes},
            benchmark={"batch": 1, "batch_sizes": list(prof.bench_batch_sizes), "input": ", ".join(f"{k} {list(v.shape)}" for k, v in bench_feed.items()),
                       "threads": threads, "min_runs": prof.bench_min_runs, "min_seconds": prof.bench_min_seconds,
                       "max_seconds": prof.bench_max_seconds, "interleaved": True},
            targets=results,
            notes=list(prep.samples.notes),
        )
        write_json(bundle.root / "report.json", report.to_dict())
        (bundle.root / "report.md").write_text(report.to_markdown())
        bundle.write_manifest(source_info, {"edgekit": __version__, "task": report.task, "profile": prof.name,
                                            "targets": [t.name for t in target_list]})
        report.bundle = bundle.commit()
    if junit_path is not None:
        write_junit(report, junit_path)
    return report
