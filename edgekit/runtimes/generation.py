"""Text generation on any runtime: one greedy loop with a KV cache over each runtime's decoder step.

Rules:
1. A runtime opens a generative artifact (an ONNX graph with `past_key_values.*` inputs and `present.*`
   outputs, a stateful OpenVINO IR) as a `Decoder`: `reset()` empties its cache, `step(ids, past)` feeds
   tokens at positions past..past+n-1 on top of the cache and returns their logits [1, n, vocab]. The
   original (PyTorch, with its own cache) is a Decoder too, so every figure comes from the same loop.
2. `GenerationSession` is a session like any other (runtimes/base.py rule 5). Its feed is `input_ids`
   [1, T] (int64) and `new_tokens` [1] (how many tokens to generate greedily); its outputs are `logits`
   [1, T, vocab] (the prompt teacher-forced in one prefill: the next-token distributions), `token_logprobs`
   [1, T-1] (the log-probability of each next prompt token: perplexity), `tokens` [1, new_tokens] (the
   greedy continuation, run through the cache one token per step) and `token_scores` [1, new_tokens] (the
   logit of each generated token: the decode steps' numerics, compared where the continuations agree).
   End-of-sequence does not stop the loop: every run generates exactly `new_tokens`, so runs compare and time alike.
3. Each run records its time to first token (the prefill and the first argmax) and the time of each later
   token (`timings`), so the benchmark's interleaved runs give TTFT and time per output token too.
4. An encoder-decoder model (T5, BART, Marian: a decoder with a `start_id`) takes `input_ids` [1, S] (the source;
   a speech recogniser such as Whisper `input_features` [1, mels, frames]) and `decoder_input_ids` [1, T] (the
   decoder's first token and a target text): `reset(feed)` runs the encoder once
   on the source, the target is teacher-forced in one pass (`logits`, `token_logprobs` are over it), then the
   decoder's cache is emptied (`reset()`: the encoder's output is kept) and the greedy continuation starts from the
   first token. Time to first token is the encoder's and the first greedy step's (the teacher-forced pass is not
   timed). `Seq2SeqDecoder` runs optimum's export (an encoder graph and a merged decoder graph, self- and
   cross-attention caches fed back) on any runtime's sessions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from .base import Feed

INPUT_IDS, NEW_TOKENS, DECODER_INPUT_IDS = "input_ids", "new_tokens", "decoder_input_ids"
AUDIO_FEATURES = "input_features"  # a speech encoder-decoder's source (Whisper: log-mel frames)
# Rule 4: an encoder-decoder artifact's other graphs beside its decoder: the encoder, and where the decoder is not one
# merged graph (OpenVINO's CPU plugin cannot take the merged graph's `If`), the decoder's first step (no cache).
ENCODER, FIRST_STEP, PAST_STEP = "encoder", "decoder_first", "decoder_past"
OUTPUT_NAMES = ("logits", "token_logprobs", "tokens", "token_scores")
PAST_PREFIX, PRESENT_PREFIX = "past_key_values", "present"
BEAM_IDX = "beam_idx"  # a stateful IR's input (optimum-intel's layout): which beam each cache row belongs to


class Decoder(Protocol):
    runtime: str
    settings: dict[str, Any]
    start_id: int | None  # rule 4: an encoder-decoder's first decoder token; None for a decoder-only model

    def reset(self, feed: Feed | None = None) -> None: ...

    def step(self, ids: np.ndarray, past: int) -> np.ndarray: ...


def cache_pairs(input_names: list[str], output_names: list[str]) -> list[tuple[str, str]]:
    """(past input, present output) pairs of a KV-cache decoder graph (optimum's names: `past_key_values.0.key` ->
    `present.0.key`), in input order; [] for any other graph."""
    outputs = set(output_names)
    pairs = []
    for name in input_names:
        if name.startswith(PAST_PREFIX + "."):
            present = PRESENT_PREFIX + name[len(PAST_PREFIX):]
            if present in outputs:
                pairs.append((name, present))
    return pairs if pairs and "logits" in outputs and INPUT_IDS in input_names else []


def encoder_of(decoder: Path, stem: str = ENCODER) -> Path | None:
    """Rule 4: the encoder graph (or, `stem` FIRST_STEP, the first-step decoder) beside an encoder-decoder's decoder,
    with its suffix; None when there is none."""
    found = decoder.with_name(stem + decoder.suffix)
    return found if found.is_file() and found != decoder else None


def start_token(config: dict) -> int:
    """Rule 4: an encoder-decoder's first decoder token: `decoder_start_token_id`, else its pad token (T5's rule)."""
    start = config.get("decoder_start_token_id")
    return int(start if start is not None else config["pad_token_id"])


def decoder_start(folder: Path) -> int:
    """Rule 4: the decoder's first token, from the model's config.json beside its artifact."""
    import json

    try:
        return start_token(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{folder}: an encoder-decoder needs its config.json (decoder_start_token_id) beside it: {exc}") from None


def takes_cache(input_names) -> bool:
    """Whether a graph's inputs are a KV-cache decoder's: `past_key_values.*` (explicit cache) or `beam_idx` (stateful)."""
    return any(n.startswith(PAST_PREFIX + ".") or n == BEAM_IDX for n in input_names)


def step_feed(ids: np.ndarray, past: int, inputs) -> Feed:
    """A decoder step's inputs besides its cache: the tokens at positions past.., the mask over every position so
    far, and the positions and beam index where the graph takes them (`inputs`: its input names)."""
    length = ids.shape[1]
    feed = {INPUT_IDS: ids, "attention_mask": np.ones((1, past + length), np.int64)}
    if "position_ids" in inputs:
        feed["position_ids"] = np.arange(past, past + length, dtype=np.int64)[None]
    if BEAM_IDX in inputs:
        feed[BEAM_IDX] = np.zeros(1, np.int32)
    return feed


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class Timing:
    """One run: time to first token and the time of each later token, in ms."""

    prompt_tokens: int
    first_ms: float
    step_ms: list[float] = field(default_factory=list)


class GenerationSession:
    """Rule 2: a decoder as a session; `timings` holds every run's (rule 3)."""

    output_names = list(OUTPUT_NAMES)

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.runtime = decoder.runtime
        self.settings = {**decoder.settings, "generation": {**decoder.settings.get("generation", {}),
                                                            "loop": "greedy, KV cache, one token per step"}}
        self.timings: list[Timing] = []

    def run(self, feed: Feed) -> list[np.ndarray]:
        count = int(np.asarray(feed.get(NEW_TOKENS, [0])).ravel()[0])
        start_id = getattr(self.decoder, "start_id", None)  # a Decoder written before rule 4 has none: decoder-only
        forced = _token_ids(feed, INPUT_IDS if start_id is None else DECODER_INPUT_IDS)  # rule 4: a decoder's own tokens
        start = time.perf_counter()
        self.decoder.reset(feed)
        encoded = time.perf_counter() - start
        logits = np.asarray(self.decoder.step(forced, 0), dtype=np.float32)
        first, past = logits, forced.shape[1]
        if start_id is not None:  # rule 4: the greedy continuation from the first token, on a fresh decoder cache
            begin = time.perf_counter()
            self.decoder.reset()
            first, past = self.decoder.step(np.array([[start_id]], dtype=np.int64), 0), 1
            start = begin - encoded  # time to first token: the encoder's and this step's, not the teacher-forced pass
        tokens, scores = self._greedy(first, past, count, Timing(source_length(feed), 0.0), start)
        token_logprobs = log_softmax(logits[0])[np.arange(forced.shape[1] - 1), forced[0, 1:]][None].astype(np.float32)
        return [logits, token_logprobs, np.array([tokens], dtype=np.int64), np.array([scores], dtype=np.float32)]

    def _greedy(self, first: np.ndarray, past: int, count: int, timing: Timing, start: float) -> tuple[list, list]:
        """`count` tokens greedily from the first step's logits, timed (rule 3)."""
        tokens = [int(np.argmax(first[0, -1]))] if count else []
        scores = [float(first[0, -1, tokens[0]])] if count else []
        timing.first_ms = (time.perf_counter() - start) * 1e3
        while len(tokens) < count:
            begin = time.perf_counter()
            step = self.decoder.step(np.array([[tokens[-1]]], dtype=np.int64), past)
            tokens.append(int(np.argmax(step[0, -1])))
            scores.append(float(step[0, -1, tokens[-1]]))
            past += 1
            timing.step_ms.append((time.perf_counter() - begin) * 1e3)
        self.timings.append(timing)
        return tokens, scores


def _source(feed: Feed) -> np.ndarray:
    """Rule 4: what an encoder reads: token ids, or a speech recogniser's audio features [1, mels, frames]."""
    return feed[INPUT_IDS] if INPUT_IDS in feed else feed[AUDIO_FEATURES]


def source_length(feed: Feed) -> int:
    """A feed's prompt length, as its timings record it: tokens, or a speech recogniser's frames."""
    return int(np.shape(_source(feed))[-1])


def _token_ids(feed: Feed, name: str) -> np.ndarray:
    ids = np.asarray(feed.get(name))
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1 or not np.issubdtype(ids.dtype, np.integer):
        raise UsageError(f"a generative model's feed needs {name} [1, T] of integers, not {list(ids.shape)} {ids.dtype}")
    return ids.astype(np.int64)


class Seq2SeqDecoder:
    """Rule 4: an encoder session and a decoder session (optimum's `text2text-generation-with-past` export:
    `past_key_values.N.decoder.*` and `.encoder.*` fed back from `present.*`) as a Decoder: a merged decoder (its
    `use_cache_branch` false and empty caches on a first step), or a decoder with past and `first`, the decoder's
    first step without a cache. `shapes`: the decoder's input shapes (ints where fixed), for the empty caches."""

    def __init__(self, encoder, decoder, start_id: int, shapes: dict[str, list], first=None) -> None:
        self._encoder, self._decoder, self.start_id, self.runtime = encoder, decoder, int(start_id), decoder.runtime
        self._first = first
        # each decoder session's inputs and output positions, read once (a step runs per generated token)
        self._ports = {id(s): (set(s.input_names), {n: i for i, n in enumerate(s.output_names)})
                       for s in (decoder, first) if s is not None}
        self._inputs = set(decoder.input_names)  # a decoder with past puts out no cross-attention cache: paired by name
        self._pairs = [(p, PRESENT_PREFIX + p[len(PAST_PREFIX):]) for p in sorted(self._inputs) if p.startswith(PAST_PREFIX + ".")]
        self._empty = {p: np.zeros([1] + [d if isinstance(d, int) and d > 0 else 1 for d in shapes[p][1:]], np.float32)
                       for p, _ in self._pairs}
        self._encoded: dict[str, np.ndarray] = {}
        self._cache: dict[str, np.ndarray] | None = None
        self.settings = {**decoder.settings, "generation": {
            "kv_cache": "explicit: present.* fed back as past_key_values.*; cross-attention cached from the first step",
            "encoder": "run once per input", "cache_inputs": len(self._pairs)}}

    def reset(self, feed: Feed | None = None) -> None:
        if feed is not None:  # the encoder's inputs: token ids (and their mask) or audio features (Whisper)
            takes = set(self._encoder.input_names)
            source = {k: np.asarray(v) for k, v in feed.items() if k in takes}
            if "attention_mask" in takes and "attention_mask" not in source:
                source["attention_mask"] = np.ones_like(source[INPUT_IDS], dtype=np.int64)
            hidden = self._encoder.run(source)[0]
            self._encoded = {"encoder_hidden_states": hidden,
                             **({"encoder_attention_mask": source["attention_mask"]} if "attention_mask" in source else {})}
        self._cache = None

    def step(self, ids: np.ndarray, past: int) -> np.ndarray:
        cached = self._cache is not None
        session = self._decoder if cached or self._first is None else self._first
        feed = {INPUT_IDS: ids, **self._encoded}
        if session is self._decoder:
            feed.update(self._cache if cached else self._empty)
            if "use_cache_branch" in self._inputs:
                feed["use_cache_branch"] = np.array([cached])
        takes, index = self._ports[id(session)]
        outputs = session.run({k: v for k, v in feed.items() if k in takes})
        fresh = dict(self._cache or {})  # the cross-attention caches stay the first step's
        fresh.update({p: outputs[index[o]] for p, o in self._pairs if o in index and not (cached and ".encoder." in p)})
        self._cache = fresh
        return outputs[index["logits"]]
