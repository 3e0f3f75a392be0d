"""`compile`: one model to verified, benchmarked artifacts for each target, in one bundle.

The pipeline, per target: export (once) -> caps (opset/IR, every target, before anything is built) ->
static shapes (targets that need them) -> optimise -> quantise/convert -> verify (on the target's
device, or, when it is not on this machine, the same artifact on the CPU) -> benchmark (the original and
every artifact whose device is here, interleaved) -> judge. `edgekit compile` is a thin layer over this.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

from . import __version__, result_cache, runtimes, tasks
from .build import Built, Context, Variant, build_target, static_variants
from .candidates import compete
from .bundle import BundleWriter, work_folder, write_json
from .cache import BuildCache
from .config import Profile
from .devices import machine, probe_all
from .errors import EXIT_INTERNAL, EdgekitError, UsageError, environment_error
from .judge import judge, unmeasurable, verdict
from .junit import write_junit
from .progress import NullProgress, rounds
from .report import NO_BENCH, FailedTarget, Report, TargetResult
from .request import CompileRequest, Resolved
from .runtimes import Feed, LazySession, Session, default_threads
from .source import SourceModel, is_module, module_source, resolve_source
from .stages import benchmark, static_shapes
from .stages.caps import check_caps
from .stages.prepare import Prepared, prepare
from .tasks import TaskFamily
from .runtimes.generation import source_length
from .tasks.generation import check_static_lengths, timing_figures

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = Path("edgekit-out")


def default_output(source: SourceModel) -> Path:
    return DEFAULT_OUTPUT_ROOT / source.name


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


def _benchmark(named: dict[str, Built], prep: Prepared, feed: Feed, prof: Profile, progress
               ) -> tuple[dict[str, benchmark.Latency], dict[str, dict[int, benchmark.Throughput]]]:
    """Latency of the original and every artifact (by name) whose device is here on the task family's workload
    `feed`, interleaved; throughput at batch sizes."""
    measured = {name: b for name, b in named.items() if b.present.present}
    unmeasured = [name for name, b in named.items() if not b.present.present]
    progress.stage(f"benchmark the original and {len(measured)} artifact(s), interleaved"
                   + (f" (not measured here: {', '.join(unmeasured)})" if unmeasured else ""))
    sessions: dict[str, Session] = {"original": prep.reference,
                                    **{name: _own_feed(b.session, b.variant, feed) for name, b in measured.items()}}
    with rounds(progress, "benchmark round") as on_progress:
        latencies = benchmark.measure(sessions, feed, prof.bench_min_runs, prof.bench_min_seconds,
                                      prof.bench_max_seconds, on_progress)
    first_ms = {"original": float("nan"), **{name: b.first_ms for name, b in named.items()}}  # the original ran before it could be timed cold
    latencies = {name: dataclasses.replace(lat, first_ms=first_ms[name]) for name, lat in latencies.items()}
    throughput = {name: {1: benchmark.Throughput(1, 1e3 / lat.p50 if lat.p50 > 0 else None, lat.p50)}
                  for name, lat in latencies.items()}
    if any(b > 1 for b in prof.bench_batch_sizes):
        progress.stage(f"throughput at batch {', '.join(str(b) for b in prof.bench_batch_sizes if b > 1)}")
        for name, by_batch in benchmark.measure_throughput(sessions, feed, list(prof.bench_batch_sizes),
                                                           max_seconds=prof.bench_max_seconds).items():
            throughput[name].update(by_batch)
    return latencies, throughput


def _timings(session: Session) -> list:
    """A generation session's recorded runs (runtimes/generation.py rule 3), through a lazily opened original."""
    inner = session.opened if isinstance(session, LazySession) else session
    return list(getattr(inner, "timings", []) or [])


def _generation_timings(named: dict[str, Built], prep: Prepared, family: TaskFamily, prof: Profile, progress
                        ) -> dict[str, dict]:
    """Generative models (tasks/generation.py rule 3): the benchmark's runs as time to first token and per output token,
    and time to first token at the profile's other prompt lengths, interleaved."""
    sessions: dict[str, Session] = {"original": prep.reference,
                                    **{name: b.session for name, b in named.items() if b.present.present}}
    workloads = family.prompt_workloads(prep.samples, prof.generation_prompt_lengths)
    for length, feed in workloads.items():
        progress.stage(f"time to first token at {length} prompt tokens, the original and {len(sessions) - 1} artifact(s) interleaved")
        benchmark.measure(sessions, feed, max(5, prof.bench_min_runs // 5), prof.bench_min_seconds / 2, prof.bench_max_seconds / 2)
    own = source_length(prep.samples.benchmark)
    new_tokens = int(prep.samples.benchmark["new_tokens"].ravel()[0])
    out = {}
    for name, session in sessions.items():
        found = timing_figures(_timings(session), own, new_tokens)
        if found is not None:
            found["ttft_at"] = [t for t in (timing_figures(_timings(session), n, 1) for n in workloads) if t is not None]
            out[name] = found
    return out


def compile(model: Any = None, **options: Any) -> Report:
    """Compile `model` for each target and return the report (also written to the bundle).

    `model`: a Hugging Face model folder, a hub id, an `.onnx` file, or a PyTorch `nn.Module` (then
    `example_inputs` (a tensor or a tuple of them) is required, and `input_names`, `output_names` and torch.export's
    `dynamic_shapes` may be given; the module itself is the original verified against); None for the embedded default.
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
    return run(CompileRequest(model=model, **options))


def run(request: CompileRequest) -> Report:
    """Compile a request: prepare -> build each target -> benchmark -> judge -> write (the module docstring)."""
    plan = request.resolve()
    progress = request.progress or NullProgress()
    source = (module_source(request.model) if is_module(request.model)
              else resolve_source(request.model, request.task, trust_remote_code=request.trust_remote_code))
    if source.kind == "onnx":
        check_caps(source.path, plan.targets, source.path.name)
    out = Path(request.output) if request.output is not None else default_output(source)
    threads = request.threads or default_threads()
    store = BuildCache(enabled=request.cache)
    whole = result_cache.key(plan, source, threads)
    with BundleWriter(out, force=request.force) as bundle, work_folder() as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reused = result_cache.restore(store, whole, bundle, progress)
        if reused is not None:
            reused.bundle = bundle.commit()
            if plan.junit is not None:
                write_junit(reused, plan.junit)
            return reused
        workdir = Path(tmp)
        exported = ""
        if source.module is not None:  # a module given from Python: its ONNX file first (export rule 4)
            source, exported = _export_module(source, request, workdir, progress)
            check_caps(source.path, plan.targets, "the exported graph")
        prep, family = _prepare(plan, source, threads, workdir, progress, store)
        if exported:
            prep.samples.notes.insert(0, exported)
        if prep.generative:  # weight-only precisions; an NPU fixes a decoder's lengths itself (runtimes/openvino.py rule 6)
            check_static_lengths(plan.targets, plan.profile, prep.samples)
            plan = dataclasses.replace(plan, precisions={t.name: family.build_precision(plan.precisions[t.name], plan.profile)
                                                         for t in plan.targets})
        fixed = {t.name: static_shapes.resolve(prep.specs, t.name, source.kind, prep.modality, source.config or {},
                                               plan.profile.sequence_length, frozenset(plan.shapes),
                                               family.fixed_shapes(prep.samples))
                 for t in plan.targets if t.static_shapes and not prep.generative}
        here = probe_all(plan.targets)
        variants = static_variants(fixed, prep, workdir, progress)
        ctx = Context(prep, plan.profile, store, bundle, workdir, threads, family, progress,
                      {k: v for k, v in family.secondary_for(prep.reference_outputs, plan.profile.budgets).items() if k not in plan.asked})
        built, failed = _build_all(ctx, plan, here, variants)
        latencies, throughput, generation = {}, {}, {}
        if not request.no_bench:
            def measure(named: dict[str, Built]):
                return _benchmark(named, prep, family.workload(prep.samples), plan.profile, progress)

            latencies, throughput = measure({b.target.name: b for b in built})
            built, latencies, throughput = compete(ctx, built, latencies, measure, throughput)
            if prep.generative:
                generation = _generation_timings({b.target.name: b for b in built}, prep, family, plan.profile, progress)
        report = _report(plan, ctx, source, built, latencies, throughput, generation)
        report.failed = failed
        _write(bundle, report, plan, built, store, whole)
    if plan.junit is not None:
        write_junit(report, plan.junit)
    return report


def _export_module(source: SourceModel, request: CompileRequest, workdir: Path, progress) -> tuple[SourceModel, str]:
    """A module given from Python, exported to ONNX in the work folder (export rule 4); the note says how."""
    from .stages.export import export_module

    progress.stage(f"export {source.location} to ONNX")
    source, note = export_module(source, request.example_inputs, request.input_names, request.output_names,
                                 request.dynamic_shapes, workdir / "module" / source.path.name)
    progress.note(note)
    return dataclasses.replace(source, task=request.task), note


def _build_all(ctx: Context, plan: Resolved, here: dict, variants: dict) -> tuple[list[Built], list[FailedTarget]]:
    """Every target, each on its own: one that fails is reported with its error and left out of the bundle, and
    the others are kept (issue 19); when none builds, the first failure is raised as it is."""
    built, failed, first = [], [], None
    for t in plan.targets:
        try:
            built.append(build_target(ctx, t, plan.precisions[t.name], here[t.name], variants.get(t.name)))
        except Exception as exc:  # KeyboardInterrupt is not an Exception: an interrupt still stops the build
            first = first or exc
            error = environment_error(exc) or exc
            code = error.exit_code if isinstance(error, EdgekitError) else EXIT_INTERNAL
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not isinstance(error, EdgekitError):
                text = f"{type(error).__name__}: {text}"
            failed.append(FailedTarget(t.name, t.runtime, t.device, text, code))
            shutil.rmtree(ctx.bundle.root / t.name, ignore_errors=True)  # never half a target in the bundle
            ctx.progress.note(f"{t.name}: not built ({text}); the other targets go on")
            log.debug("target %s failed", t.name, exc_info=exc)
    if not built and first is not None:
        raise first
    return built, failed


def _prepare(plan: Resolved, source: SourceModel, threads: int, workdir: Path, progress, store: BuildCache
             ) -> tuple[Prepared, TaskFamily]:
    """The export, the samples and the original's outputs (stages/prepare.py), and the model's task family."""
    request = plan.request
    family, inferred = tasks.for_model(source, plan.data, request.text_column, request.label_column)
    prep = prepare(source, plan.profile, plan.shapes, plan.data, threads, workdir, progress, store,
                   family, request.text_column, request.label_column)
    if inferred:
        prep.samples.notes.append(inferred)
    if prep.samples.synthetic and plan.profile.require_real_data:
        raise UsageError(f"profile {plan.profile.name} requires real data (require_real_data) and this model would be "
                         "judged on synthetic inputs: give --data")
    if source.kind == "huggingface":
        check_caps(prep.onnx_fp32, plan.targets, "the exported graph")
    if prep.samples.ignored_labels:
        prep.samples.notes.append(f"the labels in --data are not used: task {source.task or 'unknown'} is not a classifier "
                                  "(give --task text-classification or image-classification if it is one)")
    family.check(prep.samples, prep.reference_outputs, plan.data)
    if plan.asked:  # judge rule 7, before any target is built
        unmeasurable(plan.profile.budgets, plan.asked, *family.evaluate(
            prep.reference_outputs, prep.reference_outputs, prep.output_names, prep.samples.evaluation_labels,
            prep.samples.masks))
    return prep, family


def _result(b: Built, plan: Resolved, original, lat, throughput: dict, bundle_root: Path,
            secondary: Mapping[str, str] | None = None) -> TargetResult:
    """One target's row of the report: its figures judged against the profile's budgets."""
    request, prof, target, fidelity = plan.request, plan.profile, b.target, b.fidelity
    why_not = NO_BENCH if request.no_bench else b.present.reason
    size = b.size
    speedup = (original.p50 / lat.p50 if lat.p50 > 0 else 0.0) if lat and original else None
    checks = judge(prof.budgets, fidelity.cosine_min, fidelity.top1_agreement, lat.p90 if lat else None, size,
                   b.task_figures, not_measured=why_not, require_measured=request.require_measured,
                   secondary=secondary, speedup=speedup)
    return TargetResult(
        target=target.name, profile=prof.name, runtime=target.runtime, device=target.device,
        precision=b.precision, artifact=b.artifact.relative_to(bundle_root).as_posix(), size_bytes=size,
        latency=lat, speedup_p50=speedup, accuracy=fidelity,
        checks=checks, verdict=verdict(checks), load_ms=b.load_ms if lat else None, quantization=b.qsettings,
        runtime_settings=b.session.settings, notes=b.notes, build_seconds=b.seconds,
        throughput=throughput, memory_mb=b.memory_mb if lat else None,
        not_measured="" if lat else why_not, verified_on=f"{target.runtime} {b.device}",
        static_shapes=b.variant.static.to_dict() if b.variant is not None and b.variant.static is not None else None,
        precompiled=b.precompiled, candidates=b.candidates, out_of_domain=b.out_of_domain,
    )


def _report(plan: Resolved, ctx: Context, source: SourceModel, built: list[Built], latencies: dict, throughput: dict,
            generation: dict | None = None) -> Report:
    prof, original, prep, threads = plan.profile, latencies.get("original"), ctx.prep, ctx.threads
    generation = generation or {}
    results = [_result(b, plan, original, latencies.get(b.target.name), throughput.get(b.target.name, {}), ctx.bundle.root,
                       ctx.secondary) for b in built]
    for result in results:
        result.generation = generation.get(result.target)
    bench_feed = prep.samples.benchmark
    return Report(
        edgekit_version=__version__,
        source={"kind": source.kind, "location": source.location, "revision": source.revision,
                "weights_sha256": source.weight_files, "weights_format": source.weights_format},
        task=source.task or "unknown",
        profile=prof.name,
        original={"runtime": prep.reference.runtime, "precision": "fp32",
                  "size_bytes": sum(p.stat().st_size for p in runtimes.get("onnxruntime").files(prep.onnx_fp32)), "settings": prep.reference.settings,
                  "export_check_max_abs_error": prep.export_error},
        original_latency=original,
        original_throughput=throughput.get("original", {}),
        data={"origin": prep.samples.origin, "synthetic": prep.samples.synthetic,
              "calibration_samples": len(prep.samples.calibration), "eval_samples": len(prep.samples.evaluation),
              "seed": prof.seed, "labelled": prep.samples.labelled, "notes": prep.samples.notes},
        benchmark={"skipped": plan.request.no_bench, "batch": 1, "batch_sizes": list(prof.bench_batch_sizes),
                   "input": ", ".join(f"{k} {list(v.shape)}" for k, v in bench_feed.items()),
                   "threads": threads, "min_runs": prof.bench_min_runs, "min_seconds": prof.bench_min_seconds,
                   "max_seconds": prof.bench_max_seconds, "interleaved": True, "machine": machine()},
        targets=results,
        notes=list(prep.samples.notes),
        cache=ctx.store.summary(),
        original_generation=generation.get("original"),
    )


def _write(bundle: BundleWriter, report: Report, plan: Resolved, built: list[Built], store: BuildCache,
           whole: str | None) -> None:
    """report.json, report.md and the manifest, the whole result stored (result_cache.py), then the bundle committed
    into place."""
    write_json(bundle.root / "report.json", report.to_dict())
    (bundle.root / "report.md").write_text(report.to_markdown())
    precompiled = {b.target.name: b.precompiled for b in built if b.precompiled is not None}
    bundle.write_manifest(report.source, {"edgekit": __version__, "task": report.task, "profile": plan.profile.name,
                                          "targets": [b.target.name for b in built],
                                          **({"unmeasured": report.unmeasured} if report.unmeasured else {}),
                                          **({"precompiled": precompiled} if precompiled else {})})
    result_cache.keep(store, whole, bundle, report)
    report.bundle = bundle.commit()
