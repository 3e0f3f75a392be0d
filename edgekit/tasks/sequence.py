"""Per-token and per-frame outputs (token classification, fill-mask, CTC speech recognition): does the artifact pick the
same class at every token or frame?

Rules:
1. A sequence output is one whose samples are `[batch, tokens, classes]` (classes ≥ 2): each token's argmax
   is its decision. The figure is the top-1 agreement over the real tokens of every sample (padding, where
   the attention mask says so, is left out) and over every such output, gated by `min_top1_agreement`.
2. Its 95% interval is a bootstrap over samples (the tokens of one sentence are not independent draws).
3. Cosine of the logits is reported and gates only when asked for (`--min-cosine`), as for classifiers: the
   argmax of a token is what its user reads, and INT8 logits can sit at cosine 0.97 with every token kept.
4. A model of these tasks with no such output (an export that pooled its logits) is judged as any tensor
   model (tasks/tensor.py), cosine gating.
5. CTC speech recognition (wav2vec2, HuBERT `...ForCTC`): each frame's top-1 gates as above; beside it, the
   greedy transcripts (repeats merged, the blank dropped; the blank is the id the original's frames pick most)
   are compared: the token error rate of the artifact's against the original's and the share of clips
   transcribed identically (`transcripts`).
6. Words: with the model's vocabulary beside it (`vocab.json`, its pad token the blank and its word delimiter `|`,
   as wav2vec2's CTC tokenizer writes them), transcripts are read as text (lower case, words of letters, digits and
   apostrophes): the word error rate of the artifact's against the original's is shown, and with reference
   transcripts (`--data` a .jsonl of `audio` paths and texts, or the built-in clips, whose texts are known) the
   word accuracy (1 − WER, summed over clips) of both against them is a labelled metric, `word_accuracy`, gated by
   `max_drop.word_accuracy` as accuracy is for a classifier (bootstrap intervals over clips).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import stats
from ..stages import metrics
from .base import register
from .tensor import DecidedBy


def is_sequence(samples) -> bool:
    """Rule 1: every sample of the output is [1, tokens, classes] with classes ≥ 2."""
    return bool(samples) and all(np.ndim(s) == 3 and np.shape(s)[0] == 1 and np.shape(s)[2] >= 2 for s in samples)


def token_decisions(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rule 1: the original's and the artifact's argmax at each real token of one sample."""
    ref, cand = np.argmax(np.asarray(reference)[0], axis=-1), np.argmax(np.asarray(candidate)[0], axis=-1)
    if mask is not None and np.ndim(mask) == 2 and np.shape(mask)[1] == ref.shape[0]:
        real = np.asarray(mask)[0].astype(bool)
        ref, cand = ref[real], cand[real]
    return ref, cand


def collapse(ids: np.ndarray, blank: int) -> list[int]:
    """Rule 5: a CTC frame sequence read greedily: repeats merged, blanks dropped."""
    out, previous = [], None
    for i in ids.tolist():
        if i != previous and i != blank:
            out.append(i)
        previous = i
    return out


def edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


@dataclass(frozen=True)
class Vocabulary:
    """Rule 6: a CTC model's tokens (id -> token), its blank (the pad token) and its word delimiter."""

    tokens: dict[int, str]
    blank: int
    delimiter: str = "|"

    @classmethod
    def beside(cls, folder: Path) -> "Vocabulary | None":
        """The vocabulary wav2vec2's CTC tokenizer saves in `folder` (vocab.json, tokenizer_config.json), or None."""
        try:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            config_file = folder / "tokenizer_config.json"
            config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        except (OSError, ValueError):
            return None
        if isinstance(vocab, dict) and vocab and all(isinstance(v, dict) for v in vocab.values()):
            vocab = next(iter(vocab.values()))  # a multilingual vocabulary: {language: {token: id}}
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            return None
        tokens = {i: t for t, i in vocab.items()}
        pad = config.get("pad_token", "<pad>")
        pad = pad.get("content", "<pad>") if isinstance(pad, dict) else pad
        return cls(tokens, vocab.get(pad, 0), str(config.get("word_delimiter_token") or "|"))

    def text(self, ids: list[int]) -> str:
        """Collapsed ids read as lower-case words; special tokens (`<...>`) and unknown ids dropped."""
        pieces = [self.tokens.get(i, "") for i in ids]
        pieces = [" " if p == self.delimiter else p for p in pieces if not (p.startswith("<") and p.endswith(">"))]
        return " ".join(words("".join(pieces)))


def words(text: str) -> list[str]:
    """Rule 6: the words of a transcript, as WER counts them."""
    return re.findall(r"[\w']+", text.lower())


def transcripts(expected, outputs, index: int, vocabulary: Vocabulary | None = None) -> tuple[dict, list, list]:
    """Rules 5 and 6: the artifact's greedy CTC transcripts against the original's: token error rate (edit distance
    over the original's length, all samples together), the share of samples transcribed identically and, with a
    vocabulary, the word error rate; with the texts of both (empty without a vocabulary)."""
    frames = [np.argmax(np.asarray(r[index])[0], axis=-1) for r in expected]
    blank = vocabulary.blank if vocabulary is not None else int(np.bincount(np.concatenate(frames)).argmax()) if frames else 0
    ref_ids = [collapse(f, blank) for f in frames]
    art_ids = [collapse(np.argmax(np.asarray(row[index])[0], axis=-1), blank) for row in outputs]
    texts = ([vocabulary.text(t) for t in ref_ids], [vocabulary.text(t) for t in art_ids]) if vocabulary is not None else ([], [])
    rates = error_rates(ref_ids, art_ids, *(texts if vocabulary is not None else (None, None)))
    same = sum(r == a for r, a in zip(ref_ids, art_ids))
    return ({"token_error_rate": rates.pop("token_error_rate"), "identical": same / len(frames) if frames else 1.0,
             "blank_id": blank, **rates}, *texts)


def error_rates(ref_ids: list[list[int]], art_ids: list[list[int]], ref_texts: list[str] | None = None,
                art_texts: list[str] | None = None) -> dict[str, float]:
    """Rules 5 and 6, any recogniser's transcripts (CTC, or an encoder-decoder's: tasks/speech_to_text.py): the token
    error rate of the artifact's against the original's (edit distance over the original's length, all together)
    and, given their texts, the word error rate."""
    errors, length = sum(edit_distance(r, a) for r, a in zip(ref_ids, art_ids)), sum(len(r) for r in ref_ids)
    rates = {"token_error_rate": errors / length if length else 0.0}
    if ref_texts is not None and art_texts is not None:
        wrong, count = word_errors(ref_texts, art_texts)
        rates["word_error_rate"] = float(wrong.sum() / max(count.sum(), 1))
    return rates


def references(labels) -> list[str] | None:
    """Reference transcripts, when the evaluation labels are texts (data.py rule 8); None otherwise."""
    return [str(t) for t in labels] if labels is not None and all(isinstance(t, str) for t in labels) else None


def word_errors(references: list[str], hypotheses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: (word edits from the reference to the hypothesis, the reference's words)."""
    pairs = [(words(r), words(h)) for r, h in zip(references, hypotheses)]
    return np.array([edit_distance(r, h) for r, h in pairs], dtype=float), np.array([len(r) for r, _ in pairs], dtype=float)


def word_accuracy(references: list[str], original: list[str], artifact: list[str]) -> dict:
    """Rule 6: 1 − WER of the original's and the artifact's transcripts against the references (a labelled metric,
    drop = original − artifact, bootstrap intervals over clips)."""
    ref_wrong, count = word_errors(references, original)
    art_wrong, _ = word_errors(references, artifact)

    def score(wrong: np.ndarray, i) -> float:
        return 1.0 - float(wrong[i].sum() / max(count[i].sum(), 1))

    n = len(references)
    return metrics.metric_entry(score(ref_wrong, slice(None)), score(art_wrong, slice(None)), n, {
        "original": stats.bootstrap(lambda i: score(ref_wrong, i), n),
        "artifact": stats.bootstrap(lambda i: score(art_wrong, i), n),
        "drop": stats.bootstrap(lambda i: score(ref_wrong, i) - score(art_wrong, i), n)})


@register
class SequenceLabelling(DecidedBy):
    name = "sequence"
    tasks = ("token-classification", "fill-mask")
    priority = 10
    figure, budget = "top1_agreement", "min_top1_agreement"
    why = "the top-1 class of every token decides a per-token model"  # rule 3

    def locate(self, expected, output_names) -> list[int] | None:
        """Rule 1: the indices of the per-token outputs, or None."""
        count = len(expected[0]) if expected else 0
        return [i for i in range(count) if is_sequence([row[i] for row in expected])] or None

    def measure(self, result, indices, expected, outputs, masks) -> None:
        result.not_measured.pop("top1_agreement", None)
        same, total = np.zeros(len(expected)), np.zeros(len(expected))
        for k, (ref_row, out_row) in enumerate(zip(expected, outputs)):
            mask = masks[k] if masks is not None else None
            for i in indices:
                ref, cand = token_decisions(ref_row[i], out_row[i], mask)
                same[k] += int(np.sum(ref == cand))
                total[k] += ref.size
        if not total.sum():
            result.not_measured["top1_agreement"] = "no real tokens in the evaluation samples"
            return
        result.top1_agreement = float(same.sum() / total.sum())
        result.intervals["top1_agreement"] = stats.as_list(stats.bootstrap(
            lambda idx: float(same[idx].sum() / total[idx].sum()) if total[idx].sum() else 1.0, len(expected)))


@register
class CtcRecognition(SequenceLabelling):
    """Rules 5 and 6: CTC speech recognition, per frame as any per-token model, with its greedy transcripts compared,
    as words when the model's vocabulary is known and against reference transcripts when the data has them."""

    name = "ctc"
    tasks = ("automatic-speech-recognition",)
    why = "the top-1 class of every frame decides a CTC recogniser (its transcripts are compared beside it)"
    vocabulary: Vocabulary | None = None

    def for_source(self, source):
        if (source.config or {}).get("is_encoder_decoder"):  # Whisper: tasks/speech_to_text.py rule 1
            from .speech_to_text import SpeechToText

            return SpeechToText().for_source(source)
        folder = source.path if source.path.is_dir() else source.path.parent
        family = CtcRecognition()
        family.vocabulary = Vocabulary.beside(folder)
        return family

    def samples(self, request):
        import dataclasses

        from ..data import samples_for

        return samples_for(dataclasses.replace(request, transcribes=True))  # reference texts as the labels

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        result = super().task_metrics(expected, outputs, output_names, labels, masks)
        found = self.locate(expected, output_names)
        if found is None:
            return result
        result.transcripts, original, artifact = transcripts(expected, outputs, found[0], self.vocabulary)
        texts = references(labels)
        if texts is None:
            result.not_measured["word_accuracy"] = "no reference transcripts in the data"
        elif self.vocabulary is None:
            result.not_measured["word_accuracy"] = "no vocabulary (vocab.json) beside the model to read its transcripts"
        else:
            result.task_metrics["word_accuracy"] = word_accuracy(texts, original, artifact)
            result.labelled_samples = len(texts)
        return result
