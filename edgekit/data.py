"""Calibration, evaluation and benchmark inputs: one feed (batch 1) per sample.

Rules:
1. `--data` is a text file (one sample a line; text models), a folder of images (image models), or an
   `.npz` with one array per model input, the first axis counting samples (any model).
2. Without `--data`: text models use the built-in corpus of real English text; other models get
   synthetic inputs that respect each input's dtype, and `synthetic` is set so the report says so.
3. Samples are shuffled with the profile's seed, then split: evaluation first, calibration after.
   The two sets never overlap. Too few samples shrink both sets in proportion (and the note says so).
4. The benchmark feed is fixed: text at the profile's sequence length, other models at their shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UsageError
from .graph import InputSpec, format_shape

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class Samples:
    calibration: list[Feed]
    evaluation: list[Feed]
    benchmark: Feed
    origin: str  # human-readable: where the samples came from
    synthetic: bool
    notes: list[str]


def _split(items: list, n_eval: int, n_calib: int, seed: int, notes: list[str]) -> tuple[list, list]:
    if len(items) < 2:
        raise UsageError(f"--data holds {len(items)} sample(s); at least 2 are needed (one to calibrate, one to evaluate)")
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    if len(items) < n_eval + n_calib:
        want = n_eval + n_calib
        n_eval = max(1, min(len(items) - 1, round(len(items) * n_eval / want)))
        n_calib = len(items) - n_eval
        notes.append(f"only {len(items)} samples: {n_eval} used for evaluation and {n_calib} for calibration (asked for {want})")
    return items[:n_eval], items[n_eval:n_eval + n_calib]


# ---------------------------------------------------------------- text

def read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (text data is one sample a line)") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def text_feeds(tokenizer, texts: list[str], specs: list[InputSpec], max_length: int) -> list[Feed]:
    """Tokenise each text alone (batch 1, its true length unless the input's length is fixed)."""
    seq_fixed = {s.shape[1] for s in specs if len(s.shape) == 2 and isinstance(s.shape[1], int)}
    length = seq_fixed.pop() if seq_fixed else None
    feeds = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="np", truncation=True,
                            max_length=length or max_length,
                            padding="max_length" if length else False)
        feeds.append(_cast(dict(encoded), specs))
    return feeds


def benchmark_text(tokenizer, texts: list[str], specs: list[InputSpec], sequence_length: int) -> Feed:
    """One feed of exactly `sequence_length` tokens of real text (joined samples, truncated)."""
    fixed = {s.shape[1] for s in specs if len(s.shape) == 2 and isinstance(s.shape[1], int)}
    length = fixed.pop() if fixed else sequence_length
    encoded = tokenizer(" ".join(texts), return_tensors="np", truncation=True, max_length=length, padding="max_length")
    return _cast(dict(encoded), specs)


def _cast(encoded: Feed, specs: list[InputSpec]) -> Feed:
    feed = {}
    for spec in specs:
        if spec.name not in encoded:
            raise UsageError(f"the tokenizer produces no '{spec.name}' input (it produces {', '.join(encoded)})")
        feed[spec.name] = np.ascontiguousarray(encoded[spec.name].astype(spec.dtype))
    return feed


# ---------------------------------------------------------------- images

def list_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise UsageError(f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{path}: not a readable image ({exc})") from None


def image_feed_plain(image, spec: InputSpec) -> Feed:
    """Resize to the input's fixed H and W, scale to [0, 1], normalise with ImageNet mean and std."""
    shape = spec.shape
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise UsageError(f"image data needs a 4-D input with fixed channels, height and width; '{spec.name}' is {format_shape(shape)}: give --shape")
    channels_first = shape[1] in (1, 3)
    c, h, w = (shape[1], shape[2], shape[3]) if channels_first else (shape[3], shape[1], shape[2])
    array = np.asarray(image.resize((w, h)), dtype=np.float32) / 255.0
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    if c == 1:
        array = array.mean(axis=2, keepdims=True)
    if channels_first:
        array = array.transpose(2, 0, 1)
    return {spec.name: np.ascontiguousarray(array[None].astype(spec.dtype))}


# ---------------------------------------------------------------- npz

def npz_feeds(path: Path, specs: list[InputSpec]) -> list[Feed]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    with archive:
        arrays = {k: archive[k] for k in archive.files}
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UsageError(f"{path}: no array for input '{missing[0]}' (model inputs: {', '.join(names)}; arrays: {', '.join(arrays) or 'none'})")
    extra = [k for k in arrays if k not in names and k != "labels"]
    if extra:
        raise UsageError(f"{path}: array '{extra[0]}' matches no model input (model inputs: {', '.join(names)})")
    scalars = [n for n in names if arrays[n].ndim == 0]
    if scalars:
        raise UsageError(f"{path}: array '{scalars[0]}' is a scalar; each array's first axis counts samples")
    counts = {len(arrays[n]) for n in names}
    if len(counts) != 1:
        raise UsageError(f"{path}: arrays disagree on the number of samples ({', '.join(f'{n}: {len(arrays[n])}' for n in names)})")
    feeds = []
    for i in range(counts.pop()):
        feed = {}
        for spec in specs:
            sample = arrays[spec.name][i]
            if sample.ndim == len(spec.shape) - 1:
                sample = sample[None]
            if sample.ndim != len(spec.shape) or any(isinstance(d, int) and d != g for d, g in zip(spec.shape, sample.shape)):
                raise UsageError(f"{path}: sample {i} of '{spec.name}' has shape {list(sample.shape)}, the input expects {format_shape(spec.shape)}")
            feed[spec.name] = np.ascontiguousarray(sample.astype(spec.dtype))
        feeds.append(feed)
    return feeds


# ---------------------------------------------------------------- synthetic

def synthetic_feed(specs: list[InputSpec], rng: np.random.Generator, vocab_size: int = 1000) -> Feed:
    """Random inputs of each input's dtype and (fixed) shape: ids in range, masks of ones, images in range."""
    feed = {}
    for spec in specs:
        if spec.free_dims:
            raise UsageError(f"input '{spec.name}' {format_shape(spec.shape)} has free dimensions; give --shape")
        shape = tuple(int(d) for d in spec.shape)
        name = spec.name.lower()
        if np.issubdtype(spec.dtype, np.integer):
            if "mask" in name:
                value = np.ones(shape, dtype=spec.dtype)
            elif "type" in name or "position" in name:
                value = np.zeros(shape, dtype=spec.dtype)
            else:
                value = rng.integers(0, vocab_size, size=shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            value = np.ones(shape, dtype=np.bool_)
        else:
            # An image-like range after ImageNet normalisation, not an unbounded Gaussian.
            value = ((rng.random(shape, dtype=np.float32) - 0.45) / 0.225).astype(spec.dtype)
        feed[spec.name] = value
    return feed


def build_samples(
    specs: list[InputSpec],
    modality: str,
    data: Path | None,
    n_calib: int,
    n_eval: int,
    seed: int,
    sequence_length: int,
    tokenizer=None,
    image_processor: Callable | None = None,
    max_length: int = 512,
) -> Samples:
    """All the feeds a compile needs, from `--data` or the built-in fallbacks."""
    notes: list[str] = []
    rng = np.random.default_rng(seed)
    image_input = next((s for s in specs if len(s.shape) == 4 and s.dtype.kind == "f"), None)
    if modality == "tensor" and tokenizer is not None:
        modality = "text"
    if modality == "tensor" and image_input is not None and len(specs) == 1:
        modality = "image"

    def to_image_feed(image):
        if image_processor is not None:
            return image_processor(image)
        return image_feed_plain(image, image_input)

    if data is not None:
        if not data.exists():
            raise UsageError(f"--data: no such file or folder: {data}")
        if data.suffix.lower() == ".npz":
            feeds = npz_feeds(data, specs)
            ev, cal = _split(feeds, n_eval, n_calib, seed, notes)
            return Samples(cal, ev, ev[0], f"{data.name} (.npz, {len(feeds)} samples)", False, notes)
        if data.is_dir():
            if modality != "image":
                raise UsageError(f"--data {data}: a folder of images needs an image model; for this {modality} model give {'a text file or ' if modality == 'text' else ''}an .npz")
            images = list_images(data)
            ev, cal = _split(images, n_eval, n_calib, seed, notes)
            ev_feeds = [to_image_feed(_open_image(p)) for p in ev]
            return Samples([to_image_feed(_open_image(p)) for p in cal], ev_feeds, ev_feeds[0],
                           f"{data.name}/ ({len(images)} images)", False, notes)
        if modality != "text":
            raise UsageError(f"--data {data}: a text file needs a text model with a tokenizer; give {'a folder of images or ' if modality == 'image' else ''}an .npz with one array per input")
        texts = read_lines(data)
        ev, cal = _split(texts, n_eval, n_calib, seed, notes)
        return Samples(text_feeds(tokenizer, cal, specs, max_length), text_feeds(tokenizer, ev, specs, max_length),
                       benchmark_text(tokenizer, texts, specs, sequence_length),
                       f"{data.name} ({len(texts)} lines)", False, notes)

    if modality == "text":
        texts = read_lines(CORPUS)
        ev, cal = _split(texts, n_eval, n_calib, seed, notes)
        return Samples(text_feeds(tokenizer, cal, specs, max_length), text_feeds(tokenizer, ev, specs, max_length),
                       benchmark_text(tokenizer, texts, specs, sequence_length),
                       f"built-in English corpus ({len(texts)} paragraphs)", False, notes)

    notes.append("no --data given: calibration and accuracy figures come from SYNTHETIC inputs; "
                 "real data (--data) can change both, often a lot for INT8")
    if modality == "image" and image_processor is not None:
        from PIL import Image

        def make():
            pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
            return image_processor(Image.fromarray(pixels))
    else:
        def make():
            return synthetic_feed(specs, rng)
    ev = [make() for _ in range(n_eval)]
    cal = [make() for _ in range(n_calib)]
    return Samples(cal, ev, ev[0], "synthetic inputs (no --data)", True, notes)
