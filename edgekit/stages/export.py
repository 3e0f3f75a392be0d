"""Export: Hugging Face model -> ONNX, then prove the graph computes what the model computes.

1. The model is loaded once with optimum's TasksManager and exported from memory, so the same
   PyTorch module is both the export's source and the reference every artifact is verified against.
2. A generative decoder is exported with its KV cache (`EXPORT_TASKS`); its check compares the generation
   session's outputs: the prompt's logits in one prefill, and the greedy tokens generated through the cache. An
   encoder-decoder (text2text-generation: T5, BART, Marian; speech recognition: Whisper) is an encoder graph and decoder
   graphs (`SEQ2SEQ_FILES`).
   optimum's own validation only logs a warning; edgekit runs its own check on real samples and
   fails (ExportMismatchError, exit 3) with the measured difference when it is beyond tolerance.
3. Tokenizer and preprocessor files land beside `model.onnx`, so a device gets all it needs.
4. A PyTorch module given from Python (`edgekit.compile(module, example_inputs=...)`) is exported with
   `torch.export` (`torch.onnx.export(dynamo=True)`), falling back to TorchScript tracing where that fails
   (the report's notes say which and why); the module itself is the original every artifact is verified and
   benchmarked against (`runtimes.ModuleSession`).
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportMismatchError, InternalError, UsageError
from ..runtimes import Feed, Session
from ..source import SourceModel

log = logging.getLogger(__name__)

PREPROCESSOR_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json",
    "preprocessor_config.json", "config.json", "generation_config.json",
)
# Tasks exported with more than the task's name says: a generative decoder with its KV cache (inputs
# `past_key_values.*`, outputs `present.*`), so generation runs one token per step (runtimes/generation.py).
EXPORT_TASKS = {"text-generation": "text-generation-with-past"}
# An encoder-decoder's graphs as optimum writes them -> as edgekit names them (runtimes/generation.py rule 4): the
# merged decoder is `model.onnx`; the decoder's two halves are kept for OpenVINO, whose CPU plugin cannot take the
# merged graph's `If`.
SEQ2SEQ_TASKS = ("text2text-generation", "automatic-speech-recognition")  # exported with the caches when encoder-decoders
SEQ2SEQ_FILES = {"decoder_model_merged.onnx": "model.onnx", "encoder_model.onnx": "encoder.onnx",
                 "decoder_model.onnx": "decoder_first.onnx", "decoder_with_past_model.onnx": "decoder_past.onnx"}
# Opsets a task is exported at (else optimum's default): a decoder at 21, where ONNX Runtime's 4-bit embedding
# lookup (GatherBlockQuantized) is valid (stages/weights.py).
EXPORT_OPSETS = {"text-generation": 21}
# Export check: |onnx - torch| <= ABS + REL * max|torch| on every output of every sample checked.
EXPORT_ABS_TOLERANCE = 1e-4
EXPORT_REL_TOLERANCE = 1e-3


@dataclass
class ExportResult:
    onnx_path: Path
    folder: Path  # model.onnx plus tokenizer / preprocessor files
    model: Any  # the PyTorch module (the reference)
    library: str
    task: str


def load_model(source: SourceModel) -> tuple[Any, str, str]:
    """The PyTorch model optimum would export: (model, library, task)."""
    from optimum.exporters.tasks import TasksManager

    task = source.task or "feature-extraction"
    library = source.library if task == "feature-extraction" else "transformers"
    try:
        # Safetensors whenever the folder has them; pickles only through the restricted loader (see safety).
        kwargs = {"use_safetensors": True} if source.weights_format == "safetensors" else {}
        model = TasksManager.get_model_from_task(task, str(source.path), library_name=library, framework="pt",
                                                 trust_remote_code=source.trust_remote_code, **kwargs)
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"cannot load {source.location} for task '{task}': {str(exc).splitlines()[0]}") from exc
    return model, library, task


def load_reference(source: SourceModel, output_names: list[str], threads: int, generative: bool = False):
    """The original PyTorch model as a session whose outputs match an artifact's `output_names` (a KV-cache decoder's:
    the generation loop's)."""
    from ..runtimes.pytorch import original_session

    model, library, _ = load_model(source)
    return original_session(model, library, output_names, threads, generative)


def export_huggingface(source: SourceModel, workdir: Path) -> ExportResult:
    from optimum.exporters.onnx import onnx_export_from_model

    model, library, task = load_model(source)
    folder = workdir / "export"
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    exported = f"{task}-with-past" if encoder_decoder and task in SEQ2SEQ_TASKS else EXPORT_TASKS.get(task, task)
    try:
        onnx_export_from_model(model, folder, task=exported, library_name=library, do_validation=False,
                               **({"opset": EXPORT_OPSETS[task]} if task in EXPORT_OPSETS else {}))
    except ValueError as exc:
        message = str(exc).splitlines()[0]
        if "not supported" in message or "is not a supported" in message:
            raise UsageError(f"optimum cannot export {source.location} for '{task}': {message}") from exc
        raise InternalError(f"ONNX export failed: {message}") from exc
    if encoder_decoder:
        for theirs, ours in SEQ2SEQ_FILES.items():
            if (folder / theirs).is_file():
                (folder / theirs).rename(folder / ours)
    onnx_path = folder / "model.onnx"
    if not onnx_path.is_file():
        raise InternalError(f"ONNX export wrote no model.onnx (files: {', '.join(p.name for p in folder.iterdir())})")
    for name in PREPROCESSOR_FILES:
        if (source.path / name).is_file() and not (folder / name).exists():
            shutil.copy2(source.path / name, folder / name)
    return ExportResult(onnx_path, folder, model, library, task)


def check_export(reference: Session, exported: Session, feeds: list[Feed]) -> float:
    """Largest absolute difference on `feeds`; raises ExportMismatchError beyond tolerance."""
    worst = 0.0
    for feed in feeds:
        ref = reference.run(feed)
        got = exported.run(feed)
        for name, r, g in zip(reference.output_names, ref, got):
            if r.shape != g.shape:
                raise ExportMismatchError(f"export check: output '{name}' has shape {list(g.shape)} in ONNX but {list(r.shape)} in PyTorch")
            err = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0
            limit = EXPORT_ABS_TOLERANCE + EXPORT_REL_TOLERANCE * float(np.max(np.abs(r))) if r.size else 0.0
            if not np.isfinite(err) or err > limit:
                raise ExportMismatchError(
                    f"export check failed: output '{name}' differs from PyTorch by {err:.3g} (tolerance {limit:.3g}); "
                    "the ONNX graph does not compute what the model computes"
                )
            worst = max(worst, err)
    log.info("export check passed: max abs error %.3g over %d samples", worst, len(feeds))
    return worst


def _as_tuple(example_inputs: Any) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def export_module(source: SourceModel, example_inputs: Any, input_names: list[str] | None,
                  output_names: list[str] | None, dynamic_shapes: Any, dst: Path) -> tuple[SourceModel, str]:
    """Rule 4: a module given from Python, exported to `dst` with `torch.export` (`dynamo=True`), else by TorchScript
    tracing (saying so). (the source, now pointing at its ONNX file; a note for the report)."""
    import dataclasses

    import torch

    module = source.module.eval()
    args = _as_tuple(example_inputs)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise UsageError("example_inputs: give the module's inputs as a tensor or a tuple of tensors, e.g. "
                         "example_inputs=(torch.randn(1, 3, 32, 32),)")
    names = list(input_names or [f"input_{i}" for i in range(len(args))])
    if len(names) != len(args):
        raise UsageError(f"input_names: {len(names)} name(s) for {len(args)} example input(s); give one name per input")
    with torch.inference_mode():
        produced = module(*args)
    count = len(produced) if isinstance(produced, (tuple, list)) else 1
    outputs = list(output_names or [f"output_{i}" for i in range(count)])
    dst.parent.mkdir(parents=True, exist_ok=True)
    note = "exported from the Python module with torch.export (dynamo)"
    try:
        with _quiet_torch():
            torch.onnx.export(module, args, str(dst), input_names=names, output_names=outputs,
                              dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False)
    except Exception as first:  # torch.export cannot trace every module: TorchScript tracing next, and say so
        reason = _first_line(first.__cause__ or first)
        try:
            with _quiet_torch():
                torch.onnx.export(module, args, str(dst), input_names=names, output_names=outputs, dynamo=False,
                                  opset_version=17)
        except Exception as second:
            raise UsageError(f"{source.location}: cannot be exported to ONNX: torch.export: {reason}; TorchScript "
                             f"tracing: {_first_line(second)}") from second
        note = f"exported from the Python module by TorchScript tracing (torch.export failed: {reason})"
    return dataclasses.replace(source, path=dst), note


def _first_line(exc: BaseException) -> str:
    """An exception's first line that says something, without terminal colours, at most 160 characters."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    return next((line for line in lines if line), type(exc).__name__)[:160]


@contextmanager
def _quiet_torch():
    """The exporters' own chatter (its progress on stdout, its warnings about absent torchvision operators) held back:
    edgekit says what happened in one note."""
    import contextlib
    import io

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.fx", "torch._dynamo", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
