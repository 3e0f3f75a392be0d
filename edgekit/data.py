"""Calibration, evaluation and benchmark inputs: one feed (batch 1) per sample.

Rules:
1. `--data` is a text file (one sample a line; text models), a `.jsonl` or `.csv` file with a text
   column and an optional label column (text models), a folder of images (image models), or an
   `.npz` with one array per model input, the first axis counting samples, plus an optional `labels`
   array (any model).
2. Labels: a `.jsonl`/`.csv` label column (default `label`; present on every record or on none), the
   subfolder of each image when every image sits in one of two or more subfolders of the folder (the
   ImageFolder layout), or the `.npz` `labels` array (one integer id or class name per sample).
   Classifiers map them to class ids through the model's id2label/label2id; integer ids are taken as
   they are. Without a name map, ImageFolder names get ids in sorted order (torchvision's rule).
   A label the model does not know is a usage error naming the file and the line or entry.
   Hostile sizes are refused before they are read in full (see `safety`): a text line over
   EDGEKIT_MAX_LINE_BYTES, an image declaring more than EDGEKIT_MAX_IMAGE_PIXELS pixels.
3. Without `--data`: text models use the built-in corpus of real English text; other models get
   synthetic inputs that respect each input's dtype, and `synthetic` is set so the report says so.
4. Samples are shuffled with the profile's seed, then split: `eval_samples` to evaluation first,
   `calibration_samples` to calibration next, then every sample left is evaluated too, up to
   `max_eval_samples` in all (`--eval-samples N` evaluates exactly N). The two sets never overlap; labels
   travel with their samples. Too few samples shrink both sets in proportion (and the note says so).
5. The benchmark feed is fixed: text at the profile's sequence length, other models at their shape.
6. Text models are also evaluated on a built-in out-of-domain set (OUT_OF_DOMAIN: kinds of text neither the
   corpus nor, usually, `--data` holds), never calibrated on; its fidelity is reported apart from the
   evaluation's.
7. Audio models take `--data` a folder of .wav or .flac clips (subfolders as labels; FLAC through soundfile, the
   `audio` extra) or a `.jsonl` of clips and what they
   say (`{"audio": PATH, "text": ...}`, paths relative to the file; `--text-column` names the text); without it,
   edgekit's built-in speech (16 English commands spoken by espeak-ng, their texts in `transcripts.jsonl`).
   Each clip is resampled to the feature extractor's rate and turned into the model's inputs by it.
8. A speech recogniser (a family asking `transcribes`) takes each evaluation clip's transcript as its label;
   another model given transcripts ignores them, and says so.
9. A detector takes `--data` a COCO instances file (`images`, `annotations`, `categories`; each image beside it or
   in `images/` there): categories match the model's classes by name (those it does not know are left out, and
   said), crowd boxes are left out, and each evaluation image's boxes are its label.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import UsageError
from .graph import LARGEST_VALUE, InputSpec, format_shape
from .safety import check_image_size, read_text_bounded

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]
CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
# Text of other kinds than the corpus (software documentation, contracts, science, chat, logs, leaflets, finance),
# never calibrated on: the fidelity a text model keeps outside the domain it was calibrated in (rule 6).
OUT_OF_DOMAIN = Path(__file__).resolve().parent / "data" / "corpus_ood.txt"
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
    evaluation_labels: list[int] | None = None  # class id of each evaluation sample, when the data is labelled
    ignored_labels: bool = False  # the data has labels, but the model is not a classifier
    out_of_domain: list[Feed] = field(default_factory=list)  # text models: the out-of-domain set (rule 6)
    out_of_domain_expected: list = field(default_factory=list)  # the original's outputs on it (prepare fills it)

    @property
    def labelled(self) -> bool:
        return self.evaluation_labels is not None

    @property
    def masks(self) -> list[np.ndarray | None]:
        """Each evaluation sample's attention mask (None where the model takes none): padding is not compared."""
        return masks_of(self.evaluation)


@dataclass(frozen=True)
class LabelSpace:
    """A classifier's classes: class name -> id (from config.json) and how many there are (when known)."""

    names: dict[str, int] = field(default_factory=dict)
    num_labels: int | None = None

    @classmethod
    def from_config(cls, config: dict) -> "LabelSpace":
        names: dict[str, int] = {}
        for key, value in (config.get("id2label") or {}).items():
            try:
                names[str(value)] = int(key)
            except (TypeError, ValueError):
                continue
        for key, value in (config.get("label2id") or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                names.setdefault(str(key), value)
        count = config.get("num_labels")
        if not isinstance(count, int) or isinstance(count, bool):
            count = max(names.values()) + 1 if names else None
        return cls(names, count)

    def known(self, limit: int = 5) -> str:
        ordered = sorted(self.names, key=lambda n: (self.names[n], n))
        return ", ".join(ordered[:limit]) + (", ..." if len(ordered) > limit else "")


_INTEGER = re.compile(r"^[+-]?\d+$")


def resolve_labels(path: Path, raw: list[Any], where: list[str], space: LabelSpace, sorted_names: bool = False) -> tuple[list[int], str | None]:
    """Class ids for `raw` labels (names or integer ids); `where[i]` names the line or entry for errors.

    `sorted_names`: names the model does not map get ids in sorted order (ImageFolder without id2label).
    Returns the ids and a note when ids were assigned by sorting.
    """
    order: dict[str, int] = {}
    if sorted_names and not space.names:
        names = sorted({str(v) for v in raw if not _INTEGER.fullmatch(str(v).strip())})
        order = {name: i for i, name in enumerate(names)}
    ids = []
    for value, place in zip(raw, where):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, str, np.str_)):
            raise UsageError(f"{path}: {place}: label {value!r} is neither a class name nor an integer class id")
        text = str(value).strip()
        if text in space.names:
            ids.append(space.names[text])
            continue
        if text in order:
            ids.append(order[text])
            continue
        if _INTEGER.fullmatch(text):
            number = int(text)
            if number < 0 or (space.num_labels is not None and number >= space.num_labels):
                span = f"0..{space.num_labels - 1}" if space.num_labels else "0 or more"
                raise UsageError(f"{path}: {place}: label {number} is not a class id of the model (expected {span})")
            ids.append(number)
            continue
        if space.names:
            ids_hint = f"; or an integer id 0..{space.num_labels - 1}" if space.num_labels else ""
            raise UsageError(f"{path}: {place}: label {text!r} is not a class the model knows (known: {space.known()}{ids_hint})")
        raise UsageError(f"{path}: {place}: label {text!r} is a class name, and the model has no id2label to map it; "
                         "give integer class ids")
    note = None
    if order:
        note = "class ids from the sorted subfolder names: " + ", ".join(f"{n}={i}" for n, i in list(order.items())[:8]) + (
            ", ..." if len(order) > 8 else "")
    return ids, note


def masks_of(feeds: list[Feed]) -> list[np.ndarray | None]:
    """Each feed's attention mask (None where the model takes none)."""
    return [feed.get("attention_mask") for feed in feeds]


def _split(items: list, n_eval: int, n_calib: int, seed: int, notes: list[str],
           max_eval: int | None = None) -> tuple[list, list]:
    """Rule 4: (evaluation, calibration). With `max_eval`, the samples calibration leaves are evaluated too,
    up to `max_eval` in all."""
    if len(items) < 2:
        raise UsageError(f"--data holds {len(items)} sample(s); at least 2 are needed (one to calibrate, one to evaluate)")
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    if len(items) < n_eval + n_calib:
        want = n_eval + n_calib
        n_eval = max(1, min(len(items) - 1, round(len(items) * n_eval / want)))
        n_calib = len(items) - n_eval
        notes.append(f"only {len(items)} samples: {n_eval} used for evaluation and {n_calib} for calibration (asked for {want})")
    extra = max(0, (max_eval or 0) - n_eval)
    rest = items[n_eval + n_calib:n_eval + n_calib + extra]
    if rest:
        left = len(items) - n_eval - n_calib
        notes.append(f"evaluated on {n_eval + len(rest)} samples: every one calibration did not use"
                     + (f" (the first {max_eval} of {n_eval + left}: max_eval_samples)" if left > extra else ""))
    return items[:n_eval] + rest, items[n_eval:n_eval + n_calib]


# ---------------------------------------------------------------- text

def lines_of(text: str) -> list[str]:
    """Lines split on `\n` only (a `\r` before it dropped): U+2028, form feeds and the other breaks
    `str.splitlines` knows may sit inside a JSON string or a sentence."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _none_in(path: Path, what: str) -> UsageError:
    return UsageError(f"{path}: no samples: the file is empty or blank; {what}")


def read_lines(path: Path) -> list[str]:
    try:
        text = read_text_bounded(path, "utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (text data is one sample a line)") from None
    lines = [line.strip() for line in lines_of(text) if line.strip()]
    if not lines:
        raise _none_in(path, "give one text sample a line")
    return lines


def _missing_label(path: Path, place: str, label_column: str, first: str) -> UsageError:
    return UsageError(f"{path}: {place}: no '{label_column}' ({first} has one); label every record or none")


def read_jsonl(path: Path, text_column: str = "text", label_column: str | None = None) -> tuple[list[str], list | None, list[str]]:
    """(texts, labels or None, where each record is) from a JSON Lines file: one object a line.

    `label_column` None: `label` when the records have it; a name: every record must have it.
    """
    try:
        lines = lines_of(read_text_bounded(path, "utf-8-sig"))
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (JSON Lines: one JSON object a line)") from None
    wanted = label_column or "label"
    texts, labels, where = [], [], []
    first_labelled = first_unlabelled = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        place = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: {place}: not valid JSON ({exc.msg} at column {exc.colno}); "
                             f"expected one object a line, like {{\"{text_column}\": \"...\", \"{wanted}\": ...}}") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}: {place}: expected a JSON object like {{\"{text_column}\": \"...\"}}, "
                             f"not {type(record).__name__}")
        if text_column not in record:
            raise UsageError(f"{path}: {place}: no '{text_column}' field (fields: {', '.join(record) or 'none'}); "
                             "name the text field with --text-column")
        text = record[text_column]
        if not isinstance(text, str):
            raise UsageError(f"{path}: {place}: '{text_column}' must be a string, not {json.dumps(text)[:40]}")
        label = record.get(wanted)
        if label is None:
            if label_column is not None:
                raise UsageError(f"{path}: {place}: no '{wanted}' field (fields: {', '.join(record)}); "
                                 "name the label field with --label-column")
            first_unlabelled = first_unlabelled or place
        else:
            first_labelled = first_labelled or place
        if first_labelled and first_unlabelled:
            raise _missing_label(path, first_unlabelled if label is not None else place, wanted, first_labelled)
        texts.append(text)
        labels.append(label)
        where.append(place)
    if not texts:
        raise _none_in(path, f"give one JSON object a line, like {{\"{text_column}\": \"...\"}}")
    return texts, (labels if first_labelled else None), where


def read_csv(path: Path, text_column: str = "text", label_column: str | None = None) -> tuple[list[str], list | None, list[str]]:
    """(texts, labels or None, where each row is) from a CSV file with a header row.

    `label_column` None: `label` when the header has it; a name: the header must have it.
    """
    try:
        content = read_text_bounded(path, "utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (CSV with a header row)") from None
    reader = csv.reader(io.StringIO(content, newline=""))  # rows end at \n or \r only (lines_of)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise UsageError(f"{path}: line 1: malformed CSV ({exc})") from None
    if not header:
        raise UsageError(f"{path}: empty; expected a header row with a '{text_column}' column")
    header = [h.strip() for h in header]
    if text_column not in header:
        raise UsageError(f"{path}: no column '{text_column}' (columns: {', '.join(header)}); name the text column with --text-column")
    wanted = label_column or "label"
    if label_column is not None and wanted not in header:
        raise UsageError(f"{path}: no column '{wanted}' (columns: {', '.join(header)}); name the label column with --label-column")
    t_index = header.index(text_column)
    l_index = header.index(wanted) if wanted in header else None
    texts, labels, where = [], [], []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise UsageError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
        place = f"line {reader.line_num}"
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise UsageError(f"{path}: {place}: {len(row)} fields, the header has {len(header)} ({', '.join(header)})")
        texts.append(row[t_index])
        if l_index is not None:
            if not row[l_index].strip():
                raise UsageError(f"{path}: {place}: empty '{wanted}'; label every row or drop the column")
            labels.append(row[l_index].strip())
        where.append(place)
    if not texts:
        raise _none_in(path, f"give a header row and one row a sample, with a '{text_column}' column")
    return texts, (labels if l_index is not None else None), where


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


def image_classes(folder: Path, images: list[Path]) -> list[str] | None:
    """Each image's subfolder name when the folder has the ImageFolder layout (rule 2), else None."""
    parts = [p.relative_to(folder).parts for p in images]
    if all(len(p) == 2 for p in parts) and len({p[0] for p in parts}) >= 2:
        return [p[0] for p in parts]
    return None


def _to_8bit(image):
    """A 16-bit (or integer or float) grey image scaled to 0..255 by its range: 16-bit by 65535, 32-bit integer or
    float by the smallest of 1, 255, 65535 that holds its values, else its largest value (PIL's own conversion
    clips every value above 255 to white)."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0))
    if image.mode.startswith("I;16"):
        top = 65535.0
    else:  # "I" or "F": the smallest of the usual ranges that holds every value
        top = next((t for t in (1.0, 255.0, 65535.0) if peak <= t), peak)
    grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the header only: the size is checked before decoding
            check_image_size(image, path)
            if image.mode.startswith(("I", "F")):  # 16-bit or 32-bit grey: scaled to 8 bits, not clipped at 255
                return _to_8bit(image)
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise UsageError(f"{path}: image too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
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
    return read_npz(path, specs)[0]


def read_npz(path: Path, specs: list[InputSpec]) -> tuple[list[Feed], np.ndarray | None]:
    """(one feed per sample, the `labels` array or None)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    with archive:
        arrays = {}
        for k in archive.files:
            try:
                arrays[k] = archive[k]
            except Exception as exc:
                raise UsageError(f"{path}: array '{k}' cannot be read ({str(exc).splitlines()[0]}); "
                                 "store numbers (or, for labels, strings), not Python objects") from None
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
    for spec in specs:
        _check_values(path, spec, arrays[spec.name])
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
    return feeds, _npz_labels(path, arrays.get("labels"), len(feeds))


def _check_values(path: Path, spec: InputSpec, array: np.ndarray) -> None:
    """Issue 17 §8-9: numbers the input can hold, refused before any work, naming the first bad entry: no strings or
    objects, no complex numbers (their imaginary part would be dropped), no NaN or infinity, nothing beyond the
    range of the input's type (a float32 input overflows above 3.4e38; an integer wraps)."""
    kind = array.dtype.kind
    if kind in "USOV":
        raise UsageError(f"{path}: array '{spec.name}' holds {array.dtype} values, not numbers; store the numbers the "
                         f"input takes ({spec.dtype})")
    if kind == "c":
        raise UsageError(f"{path}: array '{spec.name}' holds complex numbers; the input takes {spec.dtype} (store the "
                         "real values it expects: the imaginary part would be lost)")
    target = np.dtype(spec.dtype)
    if kind == "f" or target.kind == "f":
        bad = ~np.isfinite(array) if kind == "f" else np.zeros(array.shape, dtype=bool)
        if target.kind == "f" and array.size:
            bad |= np.abs(array.astype(np.float64)) > min(float(np.finfo(target).max), LARGEST_VALUE)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise UsageError(f"{path}: array '{spec.name}' holds {array[where].item()!r} at sample {where[0]}, index "
                             f"{list(where[1:])}: not a finite {target} value below {LARGEST_VALUE:g}; fix or drop that sample")
    elif target.kind in "iu" and array.size:
        info = np.iinfo(target)
        bad = (array < info.min) | (array > info.max)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise UsageError(f"{path}: array '{spec.name}' holds {array[where].item()} at sample {where[0]}, outside the range "
                             f"of the input's {target} ({info.min}..{info.max})")


def _npz_labels(path: Path, labels: np.ndarray | None, count: int) -> np.ndarray | None:
    if labels is None:
        return None
    if labels.dtype.kind not in "iuU":
        raise UsageError(f"{path}: 'labels' has dtype {labels.dtype}; expected integer class ids or class-name strings")
    if labels.ndim != 1:
        raise UsageError(f"{path}: 'labels' has shape {list(labels.shape)}; expected one label per sample, shape [{count}]")
    if len(labels) != count:
        raise UsageError(f"{path}: 'labels' has {len(labels)} entries, the input arrays hold {count} samples")
    return labels


# ---------------------------------------------------------------- synthetic

def _integer_kind(spec: InputSpec) -> str | None:
    """What a synthetic integer input holds, by its name: a mask (ones), token types or positions (zeros), else ids."""
    if not np.issubdtype(spec.dtype, np.integer):
        return None
    name = spec.name.lower()
    return "mask" if "mask" in name else "zeros" if "type" in name or "position" in name else "ids"


def synthetic_feed(specs: list[InputSpec], rng: np.random.Generator, vocab_size: int = 1000,
                   limits: dict[str, int] | None = None) -> Feed:
    """Random inputs of each input's dtype and (fixed) shape: ids in range, masks of ones, images in range.
    An integer input the graph bounds (`limits`, from `graph.index_limits`: the rows of the table it
    indexes) takes values in [0, limit); others in [0, vocab_size)."""
    feed, limits = {}, limits or {}
    for spec in specs:
        if spec.free_dims:
            raise UsageError(f"input '{spec.name}' {format_shape(spec.shape)} has free dimensions; give --shape")
        shape = tuple(int(d) for d in spec.shape)
        kind = _integer_kind(spec)
        if kind == "mask":
            value = np.ones(shape, dtype=spec.dtype)
        elif kind == "zeros":
            value = np.zeros(shape, dtype=spec.dtype)
        elif kind == "ids":
            value = rng.integers(0, limits.get(spec.name, vocab_size), size=shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            value = np.ones(shape, dtype=np.bool_)
        else:
            # An image-like range after ImageNet normalisation, not an unbounded Gaussian.
            value = ((rng.random(shape, dtype=np.float32) - 0.45) / 0.225).astype(spec.dtype)
        feed[spec.name] = value
    return feed


def peek_labels(data: Path | None, text_column: str = "text", label_column: str | None = None) -> tuple[list, bool] | None:
    """The raw labels `--data` holds, read without building samples, and whether they are ImageFolder
    subfolder names; None when it holds none (or cannot be read: building the samples says why)."""
    if data is None or not data.exists():
        return None
    try:
        if data.is_dir():
            classes = image_classes(data, list_images(data))
            return (classes, True) if classes else None
        suffix = data.suffix.lower()
        if suffix == ".npz":
            with np.load(data, allow_pickle=False) as arrays:
                return (arrays["labels"].reshape(-1).tolist(), False) if "labels" in arrays.files else None
        if suffix in (".jsonl", ".csv"):
            raw = (read_jsonl if suffix == ".jsonl" else read_csv)(data, text_column, label_column)[1]
            return (list(raw), False) if raw is not None else None
    except (UsageError, OSError, ValueError, KeyError):
        return None
    return None


def are_class_ids(labels: tuple[list, bool] | None, classes: int) -> bool:
    """Whether peeked labels can be a `classes`-way classifier's: integer ids in [0, classes), or two to
    `classes` ImageFolder subfolders."""
    if not labels or not labels[0]:
        return False
    raw, folder_names = labels
    if folder_names:
        return 2 <= len(set(raw)) <= classes
    texts = [str(v).strip() for v in raw if not isinstance(v, (bool, np.bool_))]
    return len(texts) == len(raw) and all(_INTEGER.fullmatch(t) and 0 <= int(t) < classes for t in texts)


def decide_modality(declared: str, specs: list[InputSpec], tokenizer=None) -> str:
    """The one place a model's kind of input is decided (a task family may decide otherwise):
    a Hugging Face model's is declared by its task and config (`declared`, "text" or "image"); an ONNX
    file's ("tensor" declared) is text when a tokenizer sits beside it, image when its only input is a
    4-D float tensor, else tensor."""
    if declared != "tensor":
        return declared
    if tokenizer is not None:
        return "text"
    if len(specs) == 1 and len(specs[0].shape) == 4 and specs[0].dtype.kind == "f":
        return "image"
    return "tensor"


@dataclass(frozen=True)
class SampleRequest:
    """What a compile asks of its samples: the inputs, where the data is and how many of each."""

    specs: list[InputSpec]
    modality: str  # decided once (decide_modality)
    data: Path | None
    n_calib: int
    n_eval: int
    seed: int
    sequence_length: int
    tokenizer: Any = None
    image_processor: Callable | None = None
    max_length: int = 512
    label_space: LabelSpace | None = None  # the classifier's classes; None for a model that is not one
    text_column: str = "text"
    label_column: str | None = None
    index_limits: dict[str, int] = field(default_factory=dict)  # integer inputs' ranges (graph.index_limits)
    max_eval: int | None = None  # evaluate what calibration leaves, up to this many in all (None: n_eval exactly)
    feature_extractor: Any = None  # audio models: the model's feature extractor (its sampling_rate and features)
    new_tokens: int = 0  # generative models: tokens generated greedily per evaluation sample
    prompt_lengths: tuple[int, ...] = (32,)  # generative models: the benchmark's prompt lengths (the first is timed in full)
    transcribes: bool = False  # speech recognisers: a clip's reference transcript is its evaluation label (rule 9)


class _Labels:
    """Labels found in `--data`, resolved against the classifier's classes (rule 2), with the notes they cause."""

    def __init__(self, req: SampleRequest, notes: list[str]):
        self.req, self.notes, self.ignored = req, notes, False

    def resolve(self, raw, where: list[str], sorted_names: bool = False) -> list[int] | None:
        if raw is None:
            return None
        if self.req.label_space is None:
            self.ignored = True
            return None
        ids, note = resolve_labels(self.req.data, list(raw), where, self.req.label_space, sorted_names)
        if note:
            self.notes.append(note)
        return ids

    def split(self, items: list, ids: list[int] | None) -> tuple[list, list, list[int] | None]:
        """(evaluation, calibration, evaluation labels): rule 4."""
        req = self.req
        ev_i, cal_i = _split(list(range(len(items))), req.n_eval, req.n_calib, req.seed, self.notes, req.max_eval)
        return [items[i] for i in ev_i], [items[i] for i in cal_i], (None if ids is None else [ids[i] for i in ev_i])


def _tag(ids) -> str:
    return ", labelled" if ids is not None else ""


def npz_samples(req: SampleRequest) -> Samples:
    """`--data` an .npz with one array per input (any model)."""
    notes: list[str] = []
    labels = _Labels(req, notes)
    feeds, raw = read_npz(req.data, req.specs)
    ids = labels.resolve(raw, [f"labels[{i}]" for i in range(len(feeds))])
    ev, cal, ev_ids = labels.split(feeds, ids)
    return Samples(cal, ev, ev[0], f"{req.data.name} (.npz, {len(feeds)} samples{_tag(ids)})", False, notes, ev_ids,
                   labels.ignored)


def _image_feed(req: SampleRequest) -> Callable:
    if req.image_processor is not None:
        return req.image_processor
    spec = next((s for s in req.specs if len(s.shape) == 4 and s.dtype.kind == "f"), None)
    return lambda image: image_feed_plain(image, spec)


def image_folder_samples(req: SampleRequest) -> Samples:
    """`--data` a folder of images (image models), ImageFolder subfolders as labels."""
    data, modality = req.data, req.modality
    if modality != "image":
        raise UsageError(f"--data {data}: a folder of images needs an image model; for this {modality} model give "
                         f"{'a text, .jsonl or .csv file or ' if modality == 'text' else ''}an .npz")
    notes: list[str] = []
    labels, to_feed = _Labels(req, notes), _image_feed(req)
    images = list_images(data)
    classes = image_classes(data, images)
    ids = labels.resolve(classes, [f"subfolder '{c}'" for c in classes or []], sorted_names=True)
    ev, cal, ev_ids = labels.split(images, ids)
    ev_feeds = [to_feed(_open_image(p)) for p in ev]
    return Samples([to_feed(_open_image(p)) for p in cal], ev_feeds, ev_feeds[0],
                   f"{data.name}/ ({len(images)} images{_tag(ids)})", False, notes, ev_ids, labels.ignored)


def read_coco(path: Path, classes: dict[str, int]) -> tuple[list[Path], list[list[list[float]]], list[str]]:
    """Rule 9: (images, each image's boxes as [class, x0, y0, x1, y1] normalised to its size, notes) from a COCO
    instances file; categories are matched to the model's classes (`classes`: name -> id) by name."""
    from .safety import read_text_bounded as read

    try:
        coco = json.loads(read(path, "utf-8-sig"))
        images, annotations, categories = coco["images"], coco.get("annotations", []), coco["categories"]
        names = {int(c["id"]): str(c["name"]) for c in categories}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not a COCO instances file ({type(exc).__name__}: {exc}); it needs 'images', "
                         "'annotations' and 'categories'") from None
    lower = {n.lower(): i for n, i in classes.items()}
    to_class = {cid: lower[name.lower()] for cid, name in names.items() if name.lower() in lower}
    if not to_class:
        raise UsageError(f"{path}: none of its categories ({', '.join(sorted(names.values())[:5])}) is one of the model's "
                         f"classes ({', '.join(sorted(classes)[:5]) or 'none in config.json'}); name them alike")
    notes = [] if len(to_class) == len(names) else [
        f"{path.name}: the boxes of categories the model does not know are left out: "
        f"{', '.join(sorted(n for c, n in names.items() if c not in to_class)[:5])}"]
    boxes: dict[int, list] = {}
    for a in annotations:
        if a.get("iscrowd") or int(a.get("category_id", -1)) not in to_class:
            continue
        boxes.setdefault(int(a["image_id"]), []).append((to_class[int(a["category_id"])], *map(float, a["bbox"])))
    files, labels = [], []
    for image in images:
        found = next((p for p in (path.parent / image["file_name"], path.parent / "images" / image["file_name"])
                      if p.is_file()), None)
        if found is None:
            raise UsageError(f"{path}: image {image['file_name']} is neither beside it nor in images/ there")
        width, height = float(image.get("width") or 0), float(image.get("height") or 0)
        if not width or not height:
            width, height = _open_image(found).size
        labels.append([[c, x / width, y / height, (x + w) / width, (y + h) / height] for c, x, y, w, h in boxes.get(int(image["id"]), [])])
        files.append(found)
    return files, labels, notes


def coco_samples(req: SampleRequest, classes: dict[str, int]) -> Samples:
    """Rule 9: `--data` a COCO instances file (detectors): its images, each evaluation image's boxes its label."""
    if req.modality != "image":
        raise UsageError(f"--data {req.data}: a COCO file needs an image model; this one takes {req.modality}")
    files, boxes, notes = read_coco(req.data, classes)
    to_feed = _image_feed(req)
    ev_i, cal_i = _split(list(range(len(files))), req.n_eval, req.n_calib, req.seed, notes, req.max_eval)
    ev_feeds = [to_feed(_open_image(files[i])) for i in ev_i]
    count = sum(len(b) for b in boxes)
    return Samples([to_feed(_open_image(files[i])) for i in cal_i], ev_feeds, ev_feeds[0],
                   f"{req.data.name} (COCO, {len(files)} images, {count} labelled boxes)", False, notes,
                   [boxes[i] for i in ev_i])


def text_file_samples(req: SampleRequest) -> Samples:
    """`--data` a text file, .jsonl or .csv (text models)."""
    data, suffix = req.data, req.data.suffix.lower()
    if req.modality != "text":
        kind = f"a {suffix} file" if suffix in (".jsonl", ".csv") else "a text file"
        raise UsageError(f"--data {data}: {kind} needs a text model with a tokenizer; give "
                         f"{'a folder of images or ' if req.modality == 'image' else ''}an .npz with one array per input")
    notes: list[str] = []
    labels = _Labels(req, notes)
    if suffix in (".jsonl", ".csv"):
        texts, raw, where = (read_jsonl if suffix == ".jsonl" else read_csv)(data, req.text_column, req.label_column)
        ids = labels.resolve(raw, where)
        ev, cal, ev_ids = labels.split(texts, ids)
        origin = f"{data.name} ({len(texts)} records{_tag(ids)})"
    else:
        texts = read_lines(data)
        ev, cal, ev_ids = labels.split(texts, None)
        origin = f"{data.name} ({len(texts)} lines)"
    return _text_samples(req, texts, ev, cal, origin, notes, ev_ids, labels.ignored)


def corpus_samples(req: SampleRequest) -> Samples:
    """No `--data`, a text model: the built-in corpus of real English text (rule 3)."""
    notes: list[str] = []
    texts = read_lines(CORPUS)
    ev, cal = _split(texts, req.n_eval, req.n_calib, req.seed, notes, req.max_eval)
    return _text_samples(req, texts, ev, cal, f"built-in English corpus ({len(texts)} paragraphs)", notes)


def _text_samples(req: SampleRequest, texts: list[str], ev: list[str], cal: list[str], origin: str, notes: list[str],
                  ev_ids: list[int] | None = None, ignored: bool = False) -> Samples:
    tok, specs = req.tokenizer, req.specs
    return Samples(text_feeds(tok, cal, specs, req.max_length), text_feeds(tok, ev, specs, req.max_length),
                   benchmark_text(tok, texts, specs, req.sequence_length), origin, False, notes, ev_ids, ignored,
                   text_feeds(tok, read_lines(OUT_OF_DOMAIN), specs, req.max_length))


def synthetic_samples(req: SampleRequest) -> Samples:
    """No `--data`, not a text model: synthetic inputs, said so (rule 3); random pictures through an image
    model's processor."""
    notes = ["no --data given: calibration and accuracy figures come from SYNTHETIC inputs; "
             "real data (--data) can change both, often a lot for INT8"] + _id_notes(req)
    rng = np.random.default_rng(req.seed)
    if req.modality == "image" and req.image_processor is not None:
        from PIL import Image

        def make():
            return req.image_processor(Image.fromarray(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)))
    else:
        def make():
            return synthetic_feed(req.specs, rng, limits=req.index_limits)
    ev = [make() for _ in range(req.n_eval)]
    cal = [make() for _ in range(req.n_calib)]
    return Samples(cal, ev, ev[0], "synthetic inputs (no --data)", True, notes)


def _id_notes(req: SampleRequest) -> list[str]:
    """Where the synthetic integer inputs' values come from: the graph's table size, or a guess (said so)."""
    notes = []
    for spec in req.specs:
        if _integer_kind(spec) != "ids":
            continue
        if spec.name in req.index_limits:
            notes.append(f"synthetic '{spec.name}' values lie in [0, {req.index_limits[spec.name]}): the rows of the "
                         "table it indexes in the graph")
        else:
            notes.append(f"synthetic '{spec.name}' values lie in [0, 1000): the graph does not bound them, so they may "
                         "lie outside the model's domain")
    return notes


def samples_for(req: SampleRequest) -> Samples:
    """All the feeds a compile needs, from `--data` (by its kind) or the fallbacks (by the model's modality)."""
    if req.modality == "audio" and (req.data is None or req.data.is_dir() or req.data.suffix.lower() == ".jsonl"):
        return audio_samples(req)
    if req.data is None:
        return corpus_samples(req) if req.modality == "text" else synthetic_samples(req)
    if not req.data.exists():
        raise UsageError(f"--data: no such file or folder: {req.data}")
    if req.data.suffix.lower() == ".npz":
        return npz_samples(req)
    return image_folder_samples(req) if req.data.is_dir() else text_file_samples(req)


SPEECH = Path(__file__).parent / "data" / "speech"  # built-in clips: short English commands spoken by espeak-ng
AUDIO_SUFFIXES = (".wav", ".flac")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sampling rate) of a PCM WAV file or, with soundfile installed
    (`pip install edgekit[audio]`), a FLAC file; anything else a usage error naming it."""
    if path.suffix.lower() == ".flac":
        return _read_flac(path)
    import wave

    try:
        with wave.open(str(path)) as clip:
            width, channels, rate = clip.getsampwidth(), clip.getnchannels(), clip.getframerate()
            raw = clip.readframes(clip.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise UsageError(f"{path}: not a readable PCM WAV file ({exc}); convert it, e.g. ffmpeg -i IN -ar 16000 OUT.wav") from None
    kinds = {1: (np.uint8, 128.0, 128.0), 2: (np.int16, 0.0, 32768.0), 4: (np.int32, 0.0, 2147483648.0)}
    if width not in kinds or not raw:
        raise UsageError(f"{path}: {8 * width}-bit or empty WAV; give 8, 16 or 32-bit PCM")
    dtype, offset, scale = kinds[width]
    samples = (np.frombuffer(raw, dtype=dtype).astype(np.float64) - offset) / scale
    return samples.reshape(-1, channels).mean(axis=1).astype(np.float32), rate


def _read_flac(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:  # an optional dependency: libsndfile through cffi
        raise UsageError(f"{path}: FLAC needs the soundfile package: pip install edgekit[audio] (or convert the clips "
                         "to WAV, e.g. ffmpeg -i IN.flac OUT.wav)") from None
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise UsageError(f"{path}: not a readable FLAC file ({exc})") from None
    if not samples.size:
        raise UsageError(f"{path}: an empty FLAC file")
    return samples.mean(axis=1).astype(np.float32), int(rate)


def resample(wave_: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`wave_` at `target` Hz (polyphase filtering where scipy is installed, else linear interpolation)."""
    if rate == target:
        return wave_
    try:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(rate, target)
        return resample_poly(wave_, target // g, rate // g).astype(np.float32)
    except ImportError:
        n = int(round(len(wave_) * target / rate))
        return np.interp(np.linspace(0, len(wave_) - 1, n), np.arange(len(wave_)), wave_).astype(np.float32)


def speech_listing(path: Path, text_column: str = "text") -> tuple[list[Path], list[str]]:
    """Rule 9: (clips, what each says) from a JSON Lines file of `{"audio": PATH, "<text_column>": TEXT}` records,
    paths relative to the file's folder; a clip that is not there is a usage error naming its line."""
    paths, texts, where = read_jsonl(path, "audio", text_column)
    clips = []
    for clip, text, place in zip(paths, texts, where):
        found = (path.parent / clip).resolve()
        if not found.is_file():
            raise UsageError(f"{path}: {place}: {clip}: no such audio file (paths are relative to {path.parent})")
        if found.suffix.lower() not in AUDIO_SUFFIXES:
            raise UsageError(f"{path}: {place}: {clip}: not a .wav or .flac file; convert it, e.g. ffmpeg -i IN -ar 16000 OUT.wav")
        if not isinstance(text, str):
            raise UsageError(f"{path}: {place}: '{text_column}' must be the clip's transcript (a string)")
        clips.append(found)
    return clips, texts


def _clips(req: SampleRequest, rate: int) -> tuple[list[Path], list | None, list | None, str]:
    """Rule 7: (clips, their class names or None, their transcripts or None, where they come from)."""
    if req.data is None or req.data.suffix.lower() == ".jsonl":
        listing = req.data or SPEECH / "transcripts.jsonl"
        clips, texts = speech_listing(listing, req.text_column if req.data is not None else "text")
        origin = (f"{listing.name} ({len(clips)} clips, transcribed)" if req.data is not None else
                  f"built-in speech ({len(clips)} English commands spoken by espeak-ng, transcribed, at {rate} Hz)")
        return clips, None, texts, origin
    folder = req.data
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not clips:
        raise UsageError(f"--data {folder}: no .wav or .flac files; give a folder of audio clips (subfolders as labels)")
    parts = [p.relative_to(folder).parts for p in clips]
    classes = [p[0] for p in parts] if all(len(p) == 2 for p in parts) else None
    return clips, classes, None, f"{folder.name}/ ({len(clips)} clips{_tag(classes)})"


def audio_samples(req: SampleRequest) -> Samples:
    """Rules 7 and 8: an audio model's feeds, from its clips through its feature extractor."""
    fe = req.feature_extractor
    if fe is None:
        raise UsageError("this audio model has no feature extractor (preprocessor_config.json) beside it; add it")
    names = {s.name for s in req.specs}
    rate = int(getattr(fe, "sampling_rate", 16000))
    clips, classes, texts, origin = _clips(req, rate)
    fixed = next((s.shape[-1] for s in req.specs if s.name == "input_values" and isinstance(s.shape[-1], int)), None)
    length = {"padding": "max_length", "max_length": fixed, "truncation": True} if fixed else {}

    def to_feed(path: Path) -> Feed:  # a fixed input length (--shape, a static target): each clip padded or cut to it
        wave_, clip_rate = read_wav(path)
        values = fe(resample(wave_, clip_rate, rate), sampling_rate=rate, return_tensors="np", **length)
        return {k: np.ascontiguousarray(np.asarray(v).astype(np.float32 if k == "input_values" else np.int64))
                for k, v in values.items() if k in names}

    notes: list[str] = []
    labels = _Labels(req, notes)
    ids = labels.resolve(classes, [f"subfolder '{c}'" for c in classes or []], sorted_names=True)
    ev_i, cal_i = _split(list(range(len(clips))), req.n_eval, req.n_calib, req.seed, notes, req.max_eval)
    ev_labels = None if ids is None else [ids[i] for i in ev_i]
    if texts is not None and req.transcribes:
        ev_labels = [texts[i] for i in ev_i]
    elif texts is not None and req.data is not None:
        labels.ignored = True
    ev_feeds = [to_feed(clips[i]) for i in ev_i]
    if req.data is None:
        notes.append("no --data given: calibration and evaluation use edgekit's built-in speech clips (synthesised "
                     "English commands); your own recordings (--data FOLDER of .wav, or a .jsonl of clips and their "
                     "transcripts) can change both")
    return Samples([to_feed(clips[i]) for i in cal_i], ev_feeds, ev_feeds[0], origin, False, notes, ev_labels,
                   labels.ignored)


def build_samples(specs: list[InputSpec], modality: str, data: Path | None, n_calib: int, n_eval: int, seed: int,
                  sequence_length: int, **options) -> Samples:
    """`samples_for` from Python: `modality` as `decide_modality` gives it; `options` are SampleRequest's others."""
    return samples_for(SampleRequest(specs, modality, data, n_calib, n_eval, seed, sequence_length, **options))
