"""Prepare: what every target shares — the FP32 ONNX graph, the samples, and the original's outputs on them.

1. A Hugging Face model is exported (`stages.export`) and the export checked against PyTorch; an ONNX
   file is used as it is. `--shape` dimensions are written into the graph.
2. Samples (calibration, evaluation, the benchmark input) are the task family's: it decides the model's
   kind of input once (`modality`) and builds them (`samples`), by default from `--data` or the fallbacks
   of `data.py`.
3. The original runs once on the evaluation samples: every artifact is compared to those outputs.
4. Steps 1 and 2+3 are build-cache entries (`cache`): "export" (the checked ONNX and preprocessor files)
   and "samples" (the feeds and the original's outputs, per input shapes).
5. The verdict never rests on the cache alone: when the original's outputs come from the cache, the
   original is run again on the first SPOT_CHECK evaluation samples and must give the same outputs (to
   SPOT_TOLERANCE of each output's largest magnitude); otherwise the entry is reported, removed and the
   samples rebuilt. The report's notes say which happened.
6. A model whose state is fed back (graph.state_pairs: an input the next call takes from an output of the same
   shape, like a recurrent `state`) is calibrated and evaluated on the states it reaches, not on synthetic
   ones (`_with_state`: sequences of STATE_STEPS calls from a zero state). An artifact runs each sequence as a
   device does, on its own state (`verify.run_free`): its error accumulates, and that is what is judged; the
   figure call by call on the original's states is noted beside it (build.py).
7. A KV-cache decoder (a generative model: runtimes/generation.py) runs as a generation session, the original
   (PyTorch with its own cache) and the exported graph alike; its samples are its task family's (real text).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import cache, graph, safety, tasks
from ..bundle import write_npz
from ..config import Profile
from ..data import CORPUS, LabelSpace, SampleRequest, Samples
from ..errors import InternalError, UsageError
from ..runtimes import LazySession, ModuleSession, Session, torch_settings
from ..runtimes.generation import OUTPUT_NAMES, cache_pairs
from ..runtimes.pytorch import original_session
from ..runtimes.onnxruntime import open_onnx
from ..source import SourceModel
from . import verify
from .export import PREPROCESSOR_FILES, check_export, export_huggingface, load_reference

if TYPE_CHECKING:
    from ..tasks import TaskFamily

log = logging.getLogger(__name__)

EXPORT_CHECK_SAMPLES = 8
SAMPLES_FILE = "samples.npz"


@contextlib.contextmanager
def muted():
    """Hold back what libraries print (optimum notices, NNCF progress bars) unless edgekit logs at INFO.

    The held-back text goes to the debug log, so `--debug` still shows everything.
    """
    if logging.getLogger("edgekit").isEnabledFor(logging.INFO):
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    finally:
        if buffer.getvalue().strip():
            log.debug("library output:\n%s", buffer.getvalue())


@dataclass
class Prepared:
    """Everything the targets share: the FP32 graph, the reference, the samples and its outputs on them."""

    source: SourceModel
    onnx_fp32: Path
    specs: list[graph.InputSpec]
    reference: Session
    output_names: list[str]
    samples: Samples
    reference_outputs: list
    preprocess_dir: Path | None
    transformer: bool
    export_error: float | None
    modality: str = "tensor"
    generative: bool = False  # a KV-cache decoder, run as a generation session (rule 7)
    samples_key: str = ""  # the build-cache key of `samples` (it covers the model, the data and the options)
    # The same samples for other input shapes (a static-shape target's fixed ones), with the original's outputs
    # on them and their cache key: same data, split and seed.
    samples_for: Callable[[list[graph.InputSpec]], tuple[Samples, list, str]] | None = field(default=None, repr=False)
    # Rule 6: the (state input, state output) pairs of a model whose samples run in sequences of STATE_STEPS calls
    # (synthetic samples of a stateful model); [] for any other. Artifacts run those sequences on their own state.
    state_pairs: list[tuple[str, str]] = field(default_factory=list)


class _Preprocessors:
    """The tokenizer and image processor found beside the model, loaded once and only when asked for."""

    def __init__(self, folder: Path, source: SourceModel, index_limits: dict[str, int]):
        self.folder, self.source, self._loaded = folder, source, None
        self.index_limits = index_limits  # the ranges the graph gives its integer inputs (graph.index_limits)

    def _load(self) -> tuple[Any, Callable | None]:
        if self._loaded is None:
            has_tokenizer = any(self.folder.glob("tokenizer*.json"))
            wanted = self.source.kind == "huggingface" or has_tokenizer
            self._loaded = _load_preprocessors(self.folder, self.source.modality) if wanted else (None, None)
        return self._loaded

    def tokenizer(self):
        return self._load()[0]

    def request(self, specs: list[graph.InputSpec], modality: str, data: Path | None, profile: Profile,
                label_space: LabelSpace | None, text_column: str, label_column: str | None) -> SampleRequest:
        tokenizer, image_processor = self._load()
        return SampleRequest(specs, modality, data, profile.calibration_samples, profile.eval_samples, profile.seed,
                             profile.sequence_length, tokenizer, image_processor,
                             min(getattr(tokenizer, "model_max_length", 512) or 512, 512), label_space,
                             text_column, label_column, self.index_limits,
                             max(profile.max_eval_samples, profile.eval_samples),
                             _feature_extractor(self.folder) if modality == "audio" else None,
                             profile.generation_new_tokens, profile.generation_prompt_lengths)


def _feature_extractor(folder: Path):
    """An audio model's feature extractor (preprocessor_config.json), or None."""
    if not (folder / "preprocessor_config.json").is_file():
        return None
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(str(folder))
    except Exception as exc:
        raise UsageError(f"{folder}: cannot load the feature extractor ({str(exc).splitlines()[0]})") from exc


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


def source_digest(source: SourceModel) -> str:
    """The content of everything the model brings: weights, config, tokenizer and preprocessor files."""
    if source.is_graph:
        beside = {name: cache.content_digest(source.path.parent / name) for name in PREPROCESSOR_FILES
                  if (source.path.parent / name).is_file()}
        return cache.key("source", {"weights": source.weight_files, "preprocessors": beside})
    # Every file of the folder; the weights were hashed when the source was resolved, so not read again.
    files = {p.relative_to(source.path).as_posix(): p for p in sorted(source.path.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(source.path).parts}
    return cache.key("source", {rel: source.weight_files.get(rel) or cache.content_digest(p) for rel, p in files.items()})


# ---------------------------------------------------------------- samples in the cache

def _save_samples(path: Path, samples: Samples, outputs: list) -> dict[str, Any]:
    arrays: dict[str, np.ndarray] = {}
    for part, feeds in (("calibration", samples.calibration), ("evaluation", samples.evaluation),
                        ("ood", samples.out_of_domain)):
        for i, feed in enumerate(feeds):
            arrays.update({f"{part}|{i}|{name}": value for name, value in feed.items()})
    arrays.update({f"benchmark|0|{name}": value for name, value in samples.benchmark.items()})
    for part, rows in (("reference", outputs), ("ood_reference", samples.out_of_domain_expected)):
        for i, outs in enumerate(rows):
            arrays.update({f"{part}|{i}|{j}": np.asarray(value) for j, value in enumerate(outs)})
    write_npz(path, arrays)
    return {"calibration": len(samples.calibration), "evaluation": len(samples.evaluation), "origin": samples.origin,
            "synthetic": samples.synthetic, "notes": samples.notes, "evaluation_labels": samples.evaluation_labels,
            "ignored_labels": samples.ignored_labels, "inputs": list(samples.benchmark),
            "outputs": len(outputs[0]) if outputs else 0, "out_of_domain": len(samples.out_of_domain)}


def _load_samples(path: Path, meta: dict[str, Any]) -> tuple[Samples, list]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}

    def feeds(part: str, count: int) -> list[dict[str, np.ndarray]]:
        return [{name: arrays[f"{part}|{i}|{name}"] for name in meta["inputs"] if f"{part}|{i}|{name}" in arrays}
                for i in range(count)]

    def rows(part: str, count: int) -> list[list[np.ndarray]]:
        return [[arrays[f"{part}|{i}|{j}"] for j in range(meta["outputs"])] for i in range(count)]

    ood = meta.get("out_of_domain", 0)
    samples = Samples(feeds("calibration", meta["calibration"]), feeds("evaluation", meta["evaluation"]),
                      feeds("benchmark", 1)[0], meta["origin"], meta["synthetic"], list(meta["notes"]),
                      meta["evaluation_labels"], meta["ignored_labels"], feeds("ood", ood), rows("ood_reference", ood))
    return samples, rows("reference", meta["evaluation"])


@dataclass
class _Export:
    onnx: Path
    preprocess_dir: Path
    torch_model: Any = None  # the exported PyTorch module, when this build exported it
    key: str = ""  # the build-cache key to store the export under, once checked
    error: float | None = None  # the export check's largest difference, when it was reused


def _export(source: SourceModel, env: dict, model_digest: str, workdir: Path, progress, store: cache.BuildCache) -> _Export:
    """Rule 1: an ONNX file as it is, a Hugging Face model exported (or its export reused from the cache)."""
    if source.kind != "huggingface":
        return _Export(source.path, source.path.parent)
    key = cache.key("export", {"env": env, "source": model_digest, "task": source.task,
                               "library": source.library, "remote_code": source.trust_remote_code})
    folder = workdir / "export"
    cached = store.fetch("export", key, folder)
    if cached is not None:
        progress.stage(f"export {source.location} ({source.task}) to ONNX: reused from the build cache")
        return _Export(folder / "model.onnx", folder, key=key, error=cached["export_check_max_abs_error"])
    progress.stage(f"export {source.location} ({source.task}) to ONNX")
    with muted():
        export = export_huggingface(source, workdir)
    return _Export(export.folder / "model.onnx", export.folder, export, key)


def _reference(source: SourceModel, export: _Export, model, threads: int, generative: bool) -> Session:
    """Rule 3: what every artifact is compared with: ONNX Runtime on an ONNX file, else PyTorch (loaded
    only when needed, when the export came from the cache); `model` is the exported graph, for its port names.
    A KV-cache decoder runs as a generation session (rule 7)."""
    output_names = [o.name for o in model.graph.output]
    if source.module is not None:  # the module given from Python is the original (export rule 4)
        return ModuleSession(source.module, [i.name for i in model.graph.input], output_names, threads)
    if source.kind == "onnx":
        try:
            return open_onnx(source.path, threads)
        except InternalError as exc:
            raise UsageError(f"{source.location}: ONNX Runtime cannot load it ({exc}); is the file complete?") from exc
    if export.torch_model is not None:
        return original_session(export.torch_model.model, export.torch_model.library, output_names, threads, generative)
    return LazySession(lambda: load_reference(source, output_names, threads, generative), "pytorch",
                       list(OUTPUT_NAMES) if generative else output_names, torch_settings(threads))


def _sound(source: SourceModel, model):
    """The model, unless a weight is NaN, infinite or beyond 1e30 (a usage error naming it)."""
    bad = graph.bad_weight(model)
    if bad is not None:
        raise UsageError(f"{source.location}: weight {bad} is not a finite number below {graph.LARGEST_VALUE:g}; the model is damaged "
                         "(fix or retrain it): nothing built from it could be trusted")
    return model


def _samples_key(env, model_digest, shapes, data, modality, text_column, label_column, labels, threads,
                 profile: Profile) -> dict:
    """What the samples and the original's outputs on them depend on (their build-cache key)."""
    return {"env": env, "model": model_digest, "shapes": shapes,
            "data": cache.content_digest(data) if data is not None else cache.content_digest(CORPUS),
            "modality": modality, "text_column": text_column, "label_column": label_column, "labels": labels,
            "threads": threads, "profile": {k: getattr(profile, k) for k in (
                "calibration_samples", "eval_samples", "max_eval_samples", "seed", "sequence_length",
                "generation_new_tokens", "generation_prompt_lengths")}}


STATE_STEPS = 8


def _with_state(reference: Session, samples: Samples, pairs: list[tuple[str, str]]) -> Samples:
    """Rule 6: a model whose state is fed back (an input the next call takes from an output) is calibrated and
    evaluated on states it reaches: synthetic feeds run in sequences of STATE_STEPS calls from a zero state, each
    call's state input the original's state output of the call before."""
    if not pairs or not samples.synthetic:
        return samples
    names = reference.output_names
    for feeds in (samples.calibration, samples.evaluation):
        for start in range(0, len(feeds), STATE_STEPS):
            state = {i: np.zeros_like(feeds[start][i]) for i, _ in pairs}
            for feed in feeds[start:start + STATE_STEPS]:
                feed.update(state)
                out = reference.run(feed)
                state = {i: np.asarray(out[names.index(o)], dtype=feed[i].dtype).reshape(feed[i].shape) for i, o in pairs}
    samples.notes.append(f"state fed back ({', '.join(f'{o} -> {i}' for i, o in pairs)}): calibration and evaluation run "
                         f"in sequences of {STATE_STEPS} calls from a zero state, each call taking the original's state "
                         "from the call before")
    return samples


SPOT_CHECK = 4
SPOT_TOLERANCE = 1e-3


def spot_check(reference: Session, samples: Samples, outputs: list) -> str | None:
    """Rule 5: None when the original gives the cached outputs again on the first SPOT_CHECK evaluation samples,
    else what differs."""
    fresh = verify.run_all(reference, samples.evaluation[:SPOT_CHECK])
    for i, (got, cached) in enumerate(zip(fresh, outputs)):
        for j, (a, b) in enumerate(zip(got, cached)):
            a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1e-6)
            if a.shape != b.shape or not np.all(np.abs(a - b) <= SPOT_TOLERANCE * scale):
                return f"output {j} of evaluation sample {i} differs from the cached one"
    return None


def prepare(source: SourceModel, profile: Profile, shapes: dict[str, tuple[int, ...]], data: Path | None,
            threads: int, workdir: Path, progress, store: cache.BuildCache, family: "TaskFamily | None" = None,
            text_column: str = "text", label_column: str | None = None) -> Prepared:
    family = family or tasks.for_task(source.task)
    env, model_digest = cache.environment(), source_digest(source)
    export = _export(source, env, model_digest, workdir, progress, store)
    model = _sound(source, graph.load(export.onnx))
    specs = graph.resolve_shapes(graph.input_specs(model), shapes)
    safety.check_input_bytes(specs, profile.calibration_samples + profile.eval_samples + 1)
    if source.is_graph:
        graph.require_static(specs)
    generative = bool(cache_pairs([i.name for i in model.graph.input], [o.name for o in model.graph.output]))
    reference = _reference(source, export, model, threads, generative)
    onnx_path = export.onnx
    if shapes:
        model = graph.apply_shapes(model, specs)
        onnx_path = workdir / "fixed_shapes.onnx"
        graph.onnx.save(model, str(onnx_path))
    transformer, pairs = graph.looks_like_transformer(model), graph.state_pairs(model)
    preprocessors = _Preprocessors(export.preprocess_dir, source, graph.index_limits(model))
    del model
    modality = family.modality(source.modality, specs, preprocessors.tokenizer() if source.is_graph else None)
    base_key = _samples_key(env, model_digest, shapes, data, modality, text_column, label_column,
                            family.label_space(source), threads, profile)

    def samples_for(for_specs: list[graph.InputSpec]) -> tuple[Samples, list, str]:
        digest = cache.key("samples", {**base_key, "specs": [(s.name, s.dtype, s.shape) for s in for_specs]})
        folder = workdir / f"samples-{digest[:12]}"
        meta = store.fetch("samples", digest, folder)
        if meta is not None:
            samples, outputs = _load_samples(folder / SAMPLES_FILE, meta)
            differs = spot_check(reference, samples, outputs)
            if differs is None:
                samples.notes.append(f"the original's outputs came from the build cache: the original was run again "
                                     f"on {min(SPOT_CHECK, len(samples.evaluation))} evaluation samples and gave them again")
                return samples, outputs, digest
            store.discard("samples", digest, f"the original, run again, disagrees: {differs}")
        samples = _with_state(reference, family.samples(preprocessors.request(
            for_specs, modality, data, profile, base_key["labels"], text_column, label_column)), pairs)
        progress.stage(f"run the original ({reference.runtime}) on {len(samples.evaluation)} evaluation samples"
                       + (f" and {len(samples.out_of_domain)} out-of-domain ones" if samples.out_of_domain else ""))
        outputs = verify.run_all(reference, samples.evaluation)
        samples.out_of_domain_expected = verify.run_all(reference, samples.out_of_domain)
        folder.mkdir(parents=True, exist_ok=True)
        meta = _save_samples(folder / SAMPLES_FILE, samples, outputs)
        store.store("samples", digest, {SAMPLES_FILE: folder / SAMPLES_FILE}, meta)
        return samples, outputs, digest

    progress.stage("prepare calibration and evaluation data")
    samples, reference_outputs, samples_key = samples_for(specs)
    for note in samples.notes:
        progress.note(note)
    export_error = _check_export(source, export, reference, samples, threads, progress, store)
    return Prepared(source, onnx_path, specs, reference, reference.output_names, samples, reference_outputs,
                    export.preprocess_dir, transformer, export_error, modality, generative, samples_key, samples_for,
                    pairs if samples.synthetic else [])


def _check_export(source: SourceModel, export: _Export, reference: Session, samples: Samples, threads: int, progress,
                  store: cache.BuildCache) -> float | None:
    """Rule 1: an export made by this build is checked against PyTorch (the module itself, for a module given from
    Python), then kept in the cache for the next."""
    if source.module is not None:
        progress.stage("check the ONNX export against the module")
        return check_export(reference, open_onnx(export.onnx, threads), samples.evaluation[:EXPORT_CHECK_SAMPLES])
    if export.torch_model is None:
        return export.error
    progress.stage("check the ONNX export against PyTorch")
    error = check_export(reference, open_onnx(export.onnx, threads), samples.evaluation[:EXPORT_CHECK_SAMPLES])
    folder = export.onnx.parent
    store.store("export", export.key, {p.name: p for p in sorted(folder.iterdir()) if p.is_file()},
                {"export_check_max_abs_error": error})
    return error
