"""Vision-language embeddings (CLIP, SigLIP: an image tower and a text tower exported as one graph): does the artifact
match images to the texts the original matches them to?

Rules:
1. Task zero-shot-image-classification: inputs `input_ids` (and `attention_mask`) of the class prompts and
   `pixel_values` of one image; outputs `logits_per_image` [1, prompts] first, then `logits_per_text`,
   `text_embeds`, `image_embeds` (optimum's export).
2. Samples: every image of `--data` (a folder; ImageFolder subfolders name the classes and label the images) with
   one prompt per class, `PROMPT` filled with its name. Without `--data`: synthetic pictures (the verdict is
   provisional) and the built-in classes `CLASSES`. Images go through the model's image processor, prompts through
   its tokenizer, padded to the longest.
3. Figures: zero-shot top-1 agreement (the prompt each image scores highest: `min_top1_agreement` gates, as for a
   classifier) and top-5 agreement; with labelled images, zero-shot accuracy and macro-F1 of both (the accuracy drop
   gates); text-to-image retrieval agreement@k: for each prompt, the k evaluation images its embedding ranks first,
   the overlap of the artifact's with the original's. Embedding and logit cosines are reported beside them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import stats
from ..errors import UsageError
from ..stages import metrics
from .base import register
from .classification import Classification

PROMPT = "a photo of a {}."
CLASSES = ("cat", "dog", "car", "bird", "tree", "house", "person", "boat")


def _images(req) -> tuple[list, list[str], list[int] | None, str, bool]:
    """(images, class names, each image's class id or None, where they came from, synthetic)."""
    from PIL import Image

    from .. import data

    if req.data is None:
        rng = np.random.default_rng(req.seed)
        count = req.n_eval + req.n_calib
        pictures = [Image.fromarray(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)) for _ in range(count)]
        return pictures, list(CLASSES), None, "synthetic pictures (no --data)", True
    if not req.data.is_dir():
        raise UsageError(f"--data {req.data}: a vision-language model takes a folder of images (subfolders as classes)")
    paths = data.list_images(req.data)
    names = data.image_classes(req.data, paths)
    classes = sorted(set(names)) if names else list(CLASSES)
    ids = [classes.index(n) for n in names] if names else None
    origin = f"{req.data.name}/ ({len(paths)} images" + (f", {len(classes)} classes as prompts)" if names else ")")
    return [data._open_image(p) for p in paths], classes, ids, origin, False


@register
class VisionLanguage(Classification):
    name = "vision-language"
    tasks = ("zero-shot-image-classification",)
    priority = 20

    def modality(self, declared, specs, tokenizer=None) -> str:
        return "image"  # the image processor is loaded; the tokenizer beside it is too

    def label_space(self, source):
        return None  # the classes are the prompts (rule 2)

    def samples(self, req):
        from .. import data

        if req.tokenizer is None or req.image_processor is None:
            raise UsageError("a vision-language model needs its tokenizer and image processor beside it "
                             "(tokenizer.json, preprocessor_config.json)")
        pictures, classes, ids, origin, synthetic = _images(req)
        prompts = req.tokenizer([PROMPT.format(c) for c in classes], padding=True, return_tensors="np")
        text = data._cast(dict(prompts), [s for s in req.specs if s.name in prompts])
        notes = [f"zero-shot: each image scored against {len(classes)} prompts ('{PROMPT.format(classes[0])}' ...)"]
        if synthetic:
            notes.insert(0, "no --data given: accuracy figures come from SYNTHETIC pictures; give a folder of images")
        order = list(range(len(pictures)))
        ev, cal = data._split(order, req.n_eval, req.n_calib, req.seed, notes, req.max_eval)

        def feed(i: int) -> dict:
            return {**text, **req.image_processor(pictures[i])}

        evaluation = [feed(i) for i in ev]
        return data.Samples([feed(i) for i in cal], evaluation, evaluation[0], origin, synthetic, notes,
                            [ids[i] for i in ev] if ids is not None else None)

    def fixed_shapes(self, samples) -> dict[str, tuple[int, ...]]:
        """Every sample holds all the prompts and one image: an NPU's static shapes are theirs."""
        return {name: tuple(int(d) for d in np.shape(value)) for name, value in samples.evaluation[0].items()}

    def check(self, samples, reference_outputs: list, data: Path | None) -> None:
        if reference_outputs and np.asarray(reference_outputs[0][0]).ndim != 2:
            raise UsageError("a vision-language model's first output must be logits_per_image [1, prompts]; "
                             "export it for zero-shot-image-classification")

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        result = super().task_metrics(expected, outputs, output_names, labels, masks)
        names = list(output_names)
        if "text_embeds" in names and "image_embeds" in names and len(expected) > 1:
            t, i = names.index("text_embeds"), names.index("image_embeds")
            overlaps, k = text_to_image(expected, outputs, t, i)
            result.retrieval_agreement_at_5, result.retrieval_k = float(np.mean(overlaps)), k
            result.intervals["retrieval_agreement_at_5"] = stats.as_list(
                stats.bootstrap(lambda idx: float(np.mean(overlaps[idx])), len(overlaps)))
            result.not_measured.pop("retrieval_agreement_at_5", None)
        return result


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 1e-12)


def text_to_image(expected, outputs, text: int, image: int, k: int = metrics.RETRIEVAL_K) -> tuple[np.ndarray, int]:
    """Rule 3: per prompt, the overlap of the k images ranked first by the artifact's embeddings and by the original's."""
    k = min(k, len(expected) - 1)

    def ranked(rows) -> np.ndarray:
        prompts = _unit(np.asarray(rows[0][text]).reshape(-1, np.asarray(rows[0][text]).shape[-1]))
        pictures = _unit(np.concatenate([np.asarray(r[image]).reshape(1, -1) for r in rows]))
        return np.argsort(-(prompts @ pictures.T), axis=1, kind="stable")[:, :k]

    a, b = ranked(expected), ranked(outputs)
    return np.array([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b)]), k
