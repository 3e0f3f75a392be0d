"""Text generation (decoder LLMs: Llama, Qwen2, GPT-2, ...): does the artifact predict and generate what the
original does, and how fast does it stream tokens?

Rules:
1. Samples are held-out text (`--data`: a text file, .jsonl or .csv; else the built-in corpus), each cut to the
   profile's `sequence_length` tokens. Each evaluation sample runs the generation session (runtimes/generation.py):
   the text teacher-forced in one prefill, then `new_tokens` tokens generated greedily from it through the cache.
   Calibration samples are held back for data-aware compression.
2. Figures, original and artifact on the same text: perplexity of each (teacher-forced) and the relative increase
   (`max_ppl_increase` gates it, judge rule 10); next-token top-1 agreement over every position (`min_token_agreement`
   gates it; a bootstrap over samples gives its interval); the mean KL divergence of the next-token distributions;
   the greedy continuations: the share identical and the mean common prefix, in tokens. The logits' cosine is
   reported and gates only when asked for.
3. The benchmark's workload is a prompt of the first of the profile's `prompt_lengths` and `new_tokens` greedy
   tokens; each run records its time to first token and time per output token. Time to first token is also
   measured at every other prompt length (`prompt_workloads`), interleaved like the rest.
4. Every sample's tokens are real text through the model's own tokenizer: no synthetic ids ever judge a generative
   model; a model folder without a tokenizer is a usage error.
5. Exactly the profile's `eval_samples` texts are evaluated (not every text calibration leaves): each keeps its
   full next-token distributions, vocabulary x sequence_length floats (Qwen2.5: 78 MB a text at 128 tokens).
6. Text-to-text (T5, BART, Marian: an encoder-decoder, runtimes/generation.py rule 4): each text's tokens are cut in
   two, the first half the source and the second the target. The target is teacher-forced after the decoder's first
   token (perplexity, next-token agreement and KL are over it), and the greedy output from the first token is
   compared: identical outputs (exact match), their common prefix, and the chrF of the artifact's decoded output
   against the original's (`chrf`, 0..100, reported). The benchmark's source is a prompt of the first
   `prompt_lengths` tokens; time to first token includes the encoder.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import stats
from ..errors import UsageError
from ..runtimes.generation import DECODER_INPUT_IDS, INPUT_IDS, NEW_TOKENS, OUTPUT_NAMES, log_softmax, start_token
from ..stages import metrics
from .base import TaskFamily, register
from .tensor import not_a_classifier

MIN_TOKENS = 4  # a sample shorter than this says nothing about perplexity


def token_feed(ids: list[int] | np.ndarray, new_tokens: int, target: list[int] | None = None) -> dict[str, np.ndarray]:
    """A generation session's feed; with `target`, an encoder-decoder's: `ids` the source, `target` the decoder's
    teacher-forced tokens (rule 6)."""
    feed = {INPUT_IDS: np.asarray([list(ids)], dtype=np.int64), NEW_TOKENS: np.array([new_tokens], dtype=np.int64)}
    if target is not None:
        feed[DECODER_INPUT_IDS] = np.asarray([list(target)], dtype=np.int64)
    return feed


def _texts(req) -> tuple[list[str], str]:
    from .. import data

    if req.data is None:
        texts = data.read_lines(data.CORPUS)
        return texts, f"built-in English corpus ({len(texts)} paragraphs)"
    suffix = req.data.suffix.lower()
    if req.data.is_dir() or suffix in (".npz", ".wav", ".png", ".jpg"):
        raise UsageError(f"--data {req.data}: a generative model takes text: give a text file (one sample a line), .jsonl or .csv")
    if suffix in (".jsonl", ".csv"):
        texts = (data.read_jsonl if suffix == ".jsonl" else data.read_csv)(req.data, req.text_column, None)[0]
        return texts, f"{req.data.name} ({len(texts)} records)"
    texts = data.read_lines(req.data)
    return texts, f"{req.data.name} ({len(texts)} lines)"


def _encode(tokenizer, texts: list[str], length: int) -> list[list[int]]:
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])[:length]
        if len(ids) >= MIN_TOKENS:
            out.append(ids)
    return out


def prompt_of(evaluation: list[dict], length: int) -> list[int]:
    """A prompt of `length` real tokens: the evaluation texts' tokens, one after another (rule 3)."""
    pool = [int(t) for feed in evaluation for t in np.asarray(feed[INPUT_IDS]).ravel()]
    if not pool:
        raise UsageError("no evaluation text to build a benchmark prompt from")
    while len(pool) < length:
        pool = pool + pool
    return pool[:length]


@register
class Generation(TaskFamily):
    name = "generation"
    tasks = ("text-generation",)
    priority = 10
    generative = True

    def modality(self, declared, specs, tokenizer=None) -> str:
        return "text"

    def samples(self, req):
        from .. import data

        if req.tokenizer is None:
            raise UsageError("a generative model needs its tokenizer: put tokenizer.json (or the tokenizer's files) beside the model")
        texts, origin = _texts(req)
        notes: list[str] = []
        ev, cal = data._split(texts, req.n_eval, req.n_calib, req.seed, notes)  # rule 5: eval_samples, no more
        length = max(MIN_TOKENS, req.sequence_length)
        evaluation = [token_feed(ids, req.new_tokens) for ids in _encode(req.tokenizer, ev, length)]
        if not evaluation:
            raise UsageError(f"--data: no evaluation text of at least {MIN_TOKENS} tokens")
        calibration = [token_feed(ids, 0) for ids in _encode(req.tokenizer, cal, length)]
        notes.append(f"each evaluation text teacher-forced (at most {length} tokens: perplexity, next-token agreement), then "
                     f"{req.new_tokens} tokens generated greedily from it (the continuation compared)")
        bench = token_feed(prompt_of(evaluation, req.prompt_lengths[0]), req.new_tokens)
        return data.Samples(calibration, evaluation, bench, origin, False, notes)

    def build_precision(self, precision: str, profile) -> str:
        """Weight-only compression (stages/weights.py): the profile's weights for any quantised or device precision;
        FP32 asked for is the export as it is."""
        return precision if precision == "fp32" else profile.generation_weights

    def prompt_workloads(self, samples, prompt_lengths: tuple[int, ...]) -> dict[int, dict[str, np.ndarray]]:
        """Rule 3: a prefill-only feed (one new token) for each prompt length but the benchmark's own."""
        own = samples.benchmark[INPUT_IDS].shape[1]
        return {n: token_feed(prompt_of(samples.evaluation, n), 1) for n in prompt_lengths if n != own}

    def secondary_for(self, reference_outputs, budgets=None):
        if getattr(budgets, "max_ppl_increase", None) is not None or getattr(budgets, "min_token_agreement", None) is not None:
            return {"min_cosine": "reported, not gated: perplexity and next-token agreement decide a generative model"}
        return {}

    def evaluate(self, expected, outputs, output_names, labels=None, masks=None):
        from ..stages import verify

        index = list(output_names).index("logits")
        fidelity = verify.compare([[e[index]] for e in expected], [[o[index]] for o in outputs], ["logits"], False)
        task = self.task_metrics(expected, outputs, output_names, labels, masks)
        fidelity.add_task(task)
        return fidelity, task.budget_figures()

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        """Rule 2."""
        li, lp, tk = (list(output_names).index(n) for n in OUTPUT_NAMES[:3])
        result = not_a_classifier()
        result.not_measured["retrieval_agreement_at_5"] = "not an embedding model"
        same, kl, prefix, exact = [], [], [], []
        for e, o in zip(expected, outputs):
            le, la = np.asarray(e[li])[0], np.asarray(o[li])[0]
            same.append(np.argmax(le, axis=-1) == np.argmax(la, axis=-1))
            pe, pa = log_softmax(le), log_softmax(la)
            kl.append(np.sum(np.exp(pe) * (pe - pa), axis=-1))
            te, ta = np.asarray(e[tk]).ravel(), np.asarray(o[tk]).ravel()
            differ = np.nonzero(te != ta)[0]
            prefix.append(int(differ[0]) if differ.size else int(te.size))
            exact.append(not differ.size)
        counts = np.array([s.sum() for s in same], dtype=np.float64)
        sizes = np.array([s.size for s in same], dtype=np.float64)
        result.token_agreement = float(counts.sum() / sizes.sum())
        result.intervals["token_agreement"] = stats.as_list(
            stats.bootstrap(lambda idx: float(counts[idx].sum() / sizes[idx].sum()), len(counts)))
        ppl_o = _perplexity([e[lp] for e in expected])
        ppl_a = _perplexity([o[lp] for o in outputs])
        result.generation = {
            "ppl_original": ppl_o, "ppl_artifact": ppl_a, "ppl_increase": ppl_a / ppl_o - 1.0 if ppl_o > 0 else 0.0,
            "kl_mean": float(np.mean(np.concatenate(kl))), "positions": int(sizes.sum()),
            "greedy_identical": float(np.mean(exact)), "greedy_prefix_mean": float(np.mean(prefix)),
            "new_tokens": int(np.asarray(expected[0][tk]).size) if expected else 0}
        return result

    def gating(self, fidelity):
        return ("token_agreement", fidelity.token_agreement) if fidelity.token_agreement is not None else super().gating(fidelity)


def bind_encoder_decoder(family, source):
    """An encoder-decoder family as it judges one model (text2text here, speech2text): the decoder's first token,
    by the rule its artifacts are run with (runtimes/generation.start_token), and its tokenizer (None when it has
    none: a usage error once samples are asked for)."""
    from transformers import AutoTokenizer

    try:
        family.start_id = start_token(source.config or {})
    except (KeyError, TypeError, ValueError):  # neither id in config.json: the artifact's session says so (exit 2)
        family.start_id = 0
    try:
        family.tokenizer = AutoTokenizer.from_pretrained(str(source.path))
    except Exception:
        family.tokenizer = None
    return family


def decoded(tokenizer, tokens) -> str:
    """Generated tokens as text, special tokens skipped; "" without a tokenizer."""
    return tokenizer.decode(np.asarray(tokens).ravel().tolist(), skip_special_tokens=True) if tokenizer is not None else ""


@register
class TextToText(Generation):
    """Rule 6: an encoder-decoder generating text from text."""

    name = "text2text"
    tasks = ("text2text-generation",)
    start_id = 0
    tokenizer = None

    def for_source(self, source) -> "TextToText":
        return bind_encoder_decoder(TextToText(), source)

    def task_metrics(self, expected, outputs, output_names, labels, masks) -> metrics.TaskMetrics:
        """Rule 6: beside the generation figures, the chrF of the artifact's decoded output against the original's."""
        result = super().task_metrics(expected, outputs, output_names, labels, masks)
        tk = list(output_names).index("tokens")
        if self.tokenizer is not None and result.generation is not None:
            result.generation["chrf"] = chrf([decoded(self.tokenizer, e[tk]) for e in expected],
                                             [decoded(self.tokenizer, o[tk]) for o in outputs])
        return result

    def samples(self, req):
        from .. import data

        if req.tokenizer is None:
            raise UsageError("a text-to-text model needs its tokenizer: put its files (tokenizer.json, spiece.model ...) beside it")
        texts, origin = _texts(req)
        notes: list[str] = []
        ev, cal = data._split(texts, req.n_eval, req.n_calib, req.seed, notes)
        length = max(2 * MIN_TOKENS, req.sequence_length)

        def halves(ids: list[int]) -> dict[str, np.ndarray]:
            cut = len(ids) // 2
            return token_feed(ids[:cut], req.new_tokens, [self.start_id] + ids[cut:])

        evaluation = [halves(ids) for ids in _encode(req.tokenizer, ev, length) if len(ids) >= 2 * MIN_TOKENS]
        if not evaluation:
            raise UsageError(f"--data: no evaluation text of at least {2 * MIN_TOKENS} tokens")
        calibration = [halves(ids) for ids in _encode(req.tokenizer, cal, length) if len(ids) >= 2 * MIN_TOKENS]
        notes.append(f"each evaluation text (at most {length} tokens) cut in two: the first half the source, the second "
                     "the target, teacher-forced after the decoder's first token (perplexity, next-token agreement); "
                     f"then {req.new_tokens} tokens generated greedily from the first token (the outputs compared)")
        return data.Samples(calibration, evaluation, self._prompt(evaluation, req.prompt_lengths[0], req.new_tokens),
                            origin, False, notes)

    def _prompt(self, evaluation, length: int, new_tokens: int) -> dict[str, np.ndarray]:
        return token_feed(prompt_of(evaluation, length), new_tokens, [self.start_id])

    def prompt_workloads(self, samples, prompt_lengths: tuple[int, ...]) -> dict[int, dict[str, np.ndarray]]:
        own = samples.benchmark[INPUT_IDS].shape[1]
        return {n: self._prompt(samples.evaluation, n, 1) for n in prompt_lengths if n != own}


CHRF_ORDER, CHRF_BETA = 6, 2.0


def chrf(references: list[str], hypotheses: list[str]) -> float:
    """chrF (Popović 2015, as sacrebleu computes it at the corpus level): character n-gram precision and recall for
    n = 1..6 (spaces removed), averaged over n, combined with recall weighted beta = 2; 0..100."""
    from collections import Counter

    matched, wanted, offered = np.zeros(CHRF_ORDER), np.zeros(CHRF_ORDER), np.zeros(CHRF_ORDER)
    for ref, hyp in zip(references, hypotheses):
        r, h = ref.replace(" ", ""), hyp.replace(" ", "")
        for n in range(1, CHRF_ORDER + 1):
            rg, hg = Counter(r[i:i + n] for i in range(len(r) - n + 1)), Counter(h[i:i + n] for i in range(len(h) - n + 1))
            matched[n - 1] += sum((rg & hg).values())
            wanted[n - 1] += sum(rg.values())
            offered[n - 1] += sum(hg.values())
    if not wanted.sum() and not offered.sum():
        return 100.0
    precision = np.mean(np.divide(matched, offered, out=np.zeros(CHRF_ORDER), where=offered > 0))
    recall = np.mean(np.divide(matched, wanted, out=np.zeros(CHRF_ORDER), where=wanted > 0))
    b2 = CHRF_BETA ** 2
    return float(100 * (1 + b2) * precision * recall / (b2 * precision + recall)) if precision + recall > 0 else 0.0


def check_static_lengths(targets, profile, samples) -> None:
    """An NPU runs a decoder compiled for a static prompt length: a longer prompt is a usage error, found before
    any target is built (runtimes/openvino.py rule 6)."""
    static = [t.name for t in targets if t.static_shapes]
    if not static:
        return
    longest = max([np.asarray(f[INPUT_IDS]).shape[1] for f in samples.evaluation if INPUT_IDS in f]
                  + list(profile.generation_prompt_lengths))
    if longest > profile.generation_max_prompt_len:
        raise UsageError(f"target {static[0]}: a prompt of {longest} tokens is longer than its static prompt length "
                         f"({profile.generation_max_prompt_len}, max_prompt_len in profile {profile.name}); raise "
                         "[generation] max_prompt_len or shorten sequence_length and prompt_lengths")


def _perplexity(token_logprobs: list[Any]) -> float:
    values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in token_logprobs])
    return float(math.exp(-values.mean())) if values.size else float("nan")


def timing_figures(timings: list, prompt_tokens: int, new_tokens: int) -> dict[str, Any] | None:
    """Time to first token and per output token (p50, p90) over the runs at one prompt length (rule 3)."""
    runs = [t for t in timings if t.prompt_tokens == prompt_tokens and len(t.step_ms) == max(0, new_tokens - 1)]
    if not runs:
        return None
    first = np.array([t.first_ms for t in runs])
    steps = np.concatenate([np.asarray(t.step_ms) for t in runs]) if new_tokens > 1 else np.array([])
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "runs": len(runs),
                           "ttft_ms": {"p50": float(np.percentile(first, 50)), "p90": float(np.percentile(first, 90))}}
    if steps.size:
        tpot = {"p50": float(np.percentile(steps, 50)), "p90": float(np.percentile(steps, 90))}
        out.update(tpot_ms=tpot, tokens_per_s=1e3 / tpot["p50"] if tpot["p50"] > 0 else None)
    return out
