"""One target, built: its artifact (from the build cache or its runtime's recipe), loaded, verified against
the original and, when an INT8 artifact misses an accuracy budget, recovered.

Rules:
1. The artifact is what the target's runtime's recipe writes (edgekit/runtimes/, stages/base.py); its
   cache key covers everything that determines its bytes and nothing else (`artifact_key`).
2. Without its device here, the same artifact file runs on the target's verify device (FP32 there):
   numerics only, latency not measured; runtime.json says which device it ran on and why.
3. Recovery runs only on a freshly built INT8 artifact of a target without its own precision, with the
   profile's recovery on, when an accuracy budget (not latency or size) is missed; the runtime does it.
4. What `edgekit verify` reruns is stored beside the artifact: one input and its own outputs on it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import runtimes
from .bundle import BundleWriter, write_json
from .cache import BuildCache
from .cache import key as cache_key
from .config import Profile, Target
from .data import Samples, masks_of
from .devices import Availability
from .judge import GATING_BUDGETS, judge
from .progress import NullProgress
from .runtimes import RecoveryInputs, RuntimeRecord, Session
from .tasks import TaskFamily
from .stages import benchmark, static_shapes, verify
from .stages.base import BuildInputs, run_recipe
from .stages.prepare import STATE_STEPS, Prepared, muted
from .verify_bundle import write_reference

BLOB_NOTE = ("a precompiled blob loads only on the same device with the same OpenVINO and driver versions (listed here); "
             "elsewhere compile model.xml on the device instead")


@dataclass
class Variant:
    """A static-shape target's inputs: its fixed graph, samples padded to it and the original's outputs on them."""

    onnx_path: Path
    samples: Samples
    reference_outputs: list
    static: static_shapes.StaticShapes | None = None
    samples_key: str = ""  # the build-cache key of `samples`


@dataclass
class Built:
    """One target's artifact, built and verified, waiting for the benchmark."""

    target: Target
    precision: str
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
    candidates: list[dict] = dataclasses.field(default_factory=list)  # INT8 and FP32 side by side (candidates.py)
    out_of_domain: dict | None = None  # text models: fidelity on the built-in out-of-domain set (data rule 6)

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in runtimes.get(self.target.runtime).files(self.artifact) if p.exists())


@dataclass
class Context:
    """What every target's build shares within one compile."""

    prep: Prepared
    profile: Profile
    store: BuildCache
    bundle: BundleWriter
    workdir: Path
    threads: int
    family: TaskFamily
    progress: Any = dataclasses.field(default_factory=NullProgress)
    secondary: Mapping[str, str] = dataclasses.field(default_factory=dict)  # budget -> why it is reported, not gated


def accuracy_met(budgets, fidelity: verify.Fidelity, task_figures: dict, secondary: Mapping[str, str] | None = None) -> bool:
    """Whether every applicable accuracy budget that gates (not latency or size) passes."""
    checks = judge(budgets, fidelity.cosine_min, fidelity.top1_agreement, None, 0, task_figures, secondary=secondary or {})
    return all(c.passed for c in checks if c.applicable and c.gating
               and c.budget not in ("max_latency_ms", "max_size_mb", "min_speedup", "require_measured"))


def artifact_key(target: Target, profile: Profile, precision: str, variant: Variant | None, samples_key: str) -> str:
    """What determines a target's artifact: the samples' key (model, data, options, versions, CPU), the target's
    and the profile's settings (not names, descriptions, benchmark or runtime-only settings), the precision and
    static shapes."""
    ignored = {"name", "description", "source"} | {k for r in runtimes.all_runtimes() for k in r.runtime_only_keys}
    return cache_key("artifact", {
        "samples": variant.samples_key if variant is not None else samples_key,
        "target": {k: v for k, v in dataclasses.asdict(target).items() if k not in ignored},
        "profile": {k: v for k, v in dataclasses.asdict(profile).items() if k not in ignored and not k.startswith("bench_")},
        "precision": precision,
        "static": variant.static.to_dict() if variant is not None and variant.static is not None else None,
    })


def build_inputs(ctx: Context, target: Target, precision: str, variant: Variant | None,
                 folder: Path | None = None) -> BuildInputs:
    """What `target`'s recipe reads; the artifact goes into the target's bundle folder, or `folder` (a candidate)."""
    prep = ctx.prep
    work = ctx.workdir / (target.name if folder is None else f"{target.name}-{precision}")
    work.mkdir(parents=True, exist_ok=True)
    return BuildInputs(
        target=target, profile=ctx.profile, precision=precision,
        onnx=variant.onnx_path if variant is not None else prep.onnx_fp32, original_onnx=prep.onnx_fp32,
        calibration=(variant.samples if variant is not None else prep.samples).calibration, transformer=prep.transformer,
        model_config=(prep.source.config or {}) if prep.source.kind == "huggingface" else None,
        static=variant.static if variant is not None else None, workdir=work,
        artifact=(folder or ctx.bundle.folder(target.name)) / runtimes.get(target.runtime).artifact_name,
        generative=prep.generative, progress=ctx.progress,
        source_dir=prep.source.path if prep.source.kind == "huggingface" else None,
        trust_remote_code=prep.source.trust_remote_code)


def _artifact(ctx: Context, inputs: BuildInputs, key: str) -> tuple[dict, list[str], bool]:
    """(quantisation settings, notes, reused): from the build cache, else built by the runtime's recipe (rule 1)."""
    target = inputs.target
    cached = ctx.store.fetch("artifact", key, inputs.artifact.parent, f"{target.name} artifact")
    if cached is not None:
        ctx.progress.stage(f"{target.name}: {inputs.precision} artifact reused from the build cache")
        return cached["quantization"], cached["notes"], True
    ctx.progress.stage(f"{target.name}: build {inputs.precision} artifact for {target.runtime} on {target.device}")
    with muted():
        built = run_recipe(runtimes.get(target.runtime).recipe(inputs), inputs)
    return {**built.settings, "steps": " → ".join(built.steps)}, built.notes, False


def build_target(ctx: Context, target: Target, precision: str, present: Availability, variant: Variant | None,
                 folder: Path | None = None) -> Built:
    """Build (or take from the cache), load, verify and, when it misses an accuracy budget, recover one target
    (into `folder` instead of its bundle folder: a candidate, candidates.py)."""
    started = time.monotonic()
    runtime = runtimes.get(target.runtime)
    samples = variant.samples if variant is not None else ctx.prep.samples
    expected = variant.reference_outputs if variant is not None else ctx.prep.reference_outputs
    inputs = build_inputs(ctx, target, precision, variant, folder)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    key = artifact_key(target, ctx.profile, precision, variant, ctx.prep.samples_key)
    qsettings, notes, reused = _artifact(ctx, inputs, key)
    _copy_preprocessors(ctx.prep, inputs.artifact.parent)
    settings = runtime.open_settings(target, ctx.profile, present.present)
    loaded = _load(runtime, inputs.artifact, settings, ctx.threads, samples.benchmark)
    ctx.progress.stage(f"{target.name}: verify against the original"
                       + ("" if present.present else f" on {settings['device']} ({target.device} not present here)"))
    evaluate = _evaluator(ctx, samples, expected)
    fidelity, figures = evaluate(loaded[0])
    settings, loaded, fidelity, figures = _float_precision(ctx, runtime, inputs.artifact, settings, loaded, fidelity,
                                                           figures, evaluate, samples, notes)
    session, load_ms, first_ms, memory_mb = loaded
    precompiled = _precompiled(session, target, inputs.artifact.parent, present) if target.precompiled_blob else None
    write_json(inputs.artifact.parent / "runtime.json", _runtime_record(target, inputs.artifact, session, present).as_dict())
    if (not reused and ctx.profile.recovery and target.precision is None and precision == "int8"
            and not accuracy_met(ctx.profile.budgets, fidelity, figures, ctx.secondary)):
        found = _recover(ctx, runtime, inputs, samples, expected, fidelity, evaluate, qsettings, settings)
        if found is not None and found.kept_fp32:  # the best artifact found replaces the plain one
            session = runtime.open(inputs.artifact, settings, ctx.threads)
            fidelity, figures = evaluate(session)
            session.run(samples.benchmark)
        _record_recovery(ctx, runtime, found, fidelity, figures, qsettings, notes)
    if ctx.prep.state_pairs:
        notes.append(_state_note(ctx, session, fidelity, evaluate))
    if not reused:  # the artifact as built, recovery included, for the next build with the same inputs
        ctx.store.store("artifact", key, {f.name: f for f in runtime.files(inputs.artifact)},
                        {"quantization": qsettings, "notes": notes}, f"{target.name} artifact")
    write_reference(inputs.artifact.parent, session, samples.evaluation[0], settings["device"],
                    settings.get("execution_provider", "CPUExecutionProvider"))  # rule 4
    return Built(target, precision, inputs.artifact, qsettings, notes, session, load_ms, time.monotonic() - started,
                 fidelity, figures, present, settings["device"], variant, precompiled, first_ms, memory_mb,
                 out_of_domain=_out_of_domain(ctx, session, samples))


# bf16 (or another lower float precision) for the layers left in float ships unless it costs more than this of
# the figure that gates, or misses a budget f32 meets (runtimes/base.py rule 7). all-MiniLM-L6-v2: bf16 costs
# nothing; a small CNN: 0.08 of cosine.
FLOAT_TOLERANCE = 0.002


def _float_precision(ctx: Context, runtime, artifact: Path, settings: dict, loaded: tuple, fidelity, figures,
                     evaluate, samples: Samples, notes: list[str]):
    """Runtime rule 7: measure the runtime's float alternatives, keep the first settings unless they cost accuracy."""
    family, budgets = ctx.family, ctx.profile.budgets
    for alternative in runtime.float_alternatives(settings):
        other = _load(runtime, artifact, alternative, ctx.threads, samples.benchmark)
        other_fidelity, other_figures = evaluate(other[0])
        metric, mine = family.gating(fidelity)
        theirs = family.gating(other_fidelity)[1]
        met, other_met = (accuracy_met(budgets, f, g, ctx.secondary) for f, g in
                          ((fidelity, figures), (other_fidelity, other_figures)))
        hint, other_hint = settings.get("INFERENCE_PRECISION_HINT"), alternative.get("INFERENCE_PRECISION_HINT")
        switch = (other_met and not met) or theirs - mine > FLOAT_TOLERANCE
        notes.append(f"layers left in float: {hint} gives {metric} {mine:.4f}, {other_hint} {theirs:.4f}; "
                     + (f"{other_hint} ships ({hint} cost accuracy)" if switch else f"{hint} ships (it costs no more "
                        f"than {FLOAT_TOLERANCE:g})"))
        if switch:
            settings, loaded, fidelity, figures = alternative, other, other_fidelity, other_figures
    return settings, loaded, fidelity, figures


def _out_of_domain(ctx: Context, session: Session, samples: Samples) -> dict | None:
    """Data rule 6: the artifact's fidelity on text of kinds it was not calibrated on, as its task family judges it."""
    if not samples.out_of_domain or not samples.out_of_domain_expected:
        return None
    names = ctx.prep.output_names
    outputs = verify.run_ordered(session, samples.out_of_domain, names)
    fidelity, _ = ctx.family.evaluate(samples.out_of_domain_expected, outputs, names, None, masks_of(samples.out_of_domain))
    figures = {"n": len(outputs), "cosine_min": fidelity.cosine_min, "cosine_mean": fidelity.cosine_mean}
    for name in ("top1_agreement", "retrieval_agreement_at_5"):
        if getattr(fidelity, name) is not None:
            figures[name] = getattr(fidelity, name)
    return figures


def _load(runtime, artifact: Path, settings: dict, threads: int, feed) -> tuple[Session, float, float, float]:
    """(session, load ms, first inference ms, resident MB added by both)."""
    rss_before = benchmark.resident_mb()
    start = time.perf_counter()
    session = runtime.open(artifact, settings, threads)
    load_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    session.run(feed)
    first_ms = (time.perf_counter() - start) * 1e3
    return session, load_ms, first_ms, max(0.0, benchmark.resident_mb() - rss_before)


def _evaluator(ctx: Context, samples: Samples, expected: list):
    """A session -> (fidelity, the task's budget figures) on the evaluation samples, as the task family judges."""
    prep = ctx.prep
    masks = samples.masks

    def evaluate(candidate: Session, own_state: bool = True) -> tuple[verify.Fidelity, dict]:
        if prep.state_pairs and own_state:  # prepare rule 6: as a device runs it, on its own state
            outputs = verify.run_free(candidate, samples.evaluation, prep.output_names, prep.state_pairs, STATE_STEPS)
        else:
            outputs = verify.run_ordered(candidate, samples.evaluation, prep.output_names)
        return ctx.family.evaluate(expected, outputs, prep.output_names, samples.evaluation_labels, masks)

    return evaluate


def _state_note(ctx: Context, session: Session, fidelity: verify.Fidelity, evaluate) -> str:
    """Prepare rule 6: the gating figure on the artifact's own state (judged) beside the one on the original's."""
    name, own = ctx.family.gating(fidelity)
    _, fed = ctx.family.gating(evaluate(session, own_state=False)[0])
    return (f"state fed back from the artifact's own outputs in sequences of {STATE_STEPS} calls, as a device runs it: "
            f"{name} {own:.4f} (judged); call by call on the original's states: {fed:.4f}")


def _recover(ctx: Context, runtime, inputs: BuildInputs, samples: Samples, expected: list, fidelity: verify.Fidelity,
             evaluate, qsettings: dict, open_settings: dict):
    """The runtime's layer fallback (rule 3), scoring candidates as the artifact ships (`open_settings`)."""
    prof, family = ctx.profile, ctx.family
    metric, before = family.gating(fidelity)
    ctx.progress.stage(f"{inputs.target.name}: INT8 misses an accuracy budget ({metric} {before:.4f}); "
                       f"searching for the fewest layers to keep FP32 (bound: {prof.recovery_seconds:g} s)")

    def score(session: Session) -> tuple[float, bool]:  # the figure that gates, and whether every budget is met
        fid, figures = evaluate(session)
        return family.gating(fid)[1], accuracy_met(prof.budgets, fid, figures, ctx.secondary)

    def measure(reference: list, outputs: list) -> float:  # the same figure on the first samples (ranking)
        fid, _ = family.evaluate(reference, outputs, ctx.prep.output_names, None, samples.masks[:len(outputs)])
        return family.gating(fid)[1]

    limit = getattr(prof.budgets, GATING_BUDGETS.get(metric, "min_cosine"), None)
    with muted():
        return runtime.recover(RecoveryInputs(inputs, inputs.artifact, before, samples.evaluation, expected,
                                              ctx.threads, score, ctx.progress.note, qsettings, open_settings,
                                              metric, measure, limit))


def _record_recovery(ctx: Context, runtime, found, fidelity: verify.Fidelity, figures: dict, qsettings: dict,
                     notes: list[str]) -> None:
    """The recovery's record and note, stating the figure the artifact is judged on (runtime rule 4): the
    artifact as it ships, measured once, after any finishing step (bias folding) ran."""
    if found is None:
        notes.append(f"no accuracy recovery: the {runtime.name} runtime has none")
        return
    found.metric, found.after = ctx.family.gating(fidelity)
    found.recovered = accuracy_met(ctx.profile.budgets, fidelity, figures, ctx.secondary)
    qsettings["recovery"] = found.to_dict()
    notes.append(_recovery_note(found))


def _recovery_note(found) -> str:
    share = f"{len(found.kept_fp32)} of {found.candidates} quantised layers kept FP32"
    if found.recovered:
        return f"recovered: {share}; {found.metric} {found.before:.4f} -> {found.after:.4f}"
    return (f"recovery could not meet the budget{f' ({found.note})' if found.note else ''}; best found: {share}, "
            f"{found.metric} {found.before:.4f} -> {found.after:.4f}")


def _copy_preprocessors(prep: Prepared, dst: Path) -> None:
    from .stages.export import PREPROCESSOR_FILES

    if prep.preprocess_dir is None:
        return
    for name in PREPROCESSOR_FILES:
        if (prep.preprocess_dir / name).is_file() and (prep.source.kind == "huggingface" or name != "config.json"):
            shutil.copy2(prep.preprocess_dir / name, dst / name)


def _precompiled(session: Session, target: Target, out_dir: Path, present: Availability) -> dict:
    """The compiled model as the device holds it (`export_model`), with the versions it is bound to."""
    if not present.present:
        return {"written": False, "reason": f"not written: no {target.device} on this machine; the blob is "
                                            "compiled on the device (rerun there, or compile model.xml on it)"}
    export = getattr(session, "export_blob", None)
    if export is None:
        return {"written": False, "reason": f"{target.runtime} cannot export a compiled model"}
    blob = out_dir / "model.blob"
    versions = export(blob)
    return {"written": True, "file": f"{target.name}/{blob.name}", **versions, "portable": False, "note": BLOB_NOTE}


def _runtime_record(target: Target, artifact: Path, session: Session, present: Availability) -> RuntimeRecord:
    """How to run the artifact: the settings it ran with, or, without its device, the device's and why (rule 2)."""
    if present.present:
        return RuntimeRecord.of(target.name, artifact.name, session.settings)
    absent = {"runtime": target.runtime, "device": target.device, **runtimes.get(target.runtime).absent_settings(target)}
    return RuntimeRecord.of(target.name, artifact.name, session.settings, absent, present.reason)


def static_variants(fixed: dict[str, static_shapes.StaticShapes], prep: Prepared, workdir: Path, progress) -> dict[str, Variant]:
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
