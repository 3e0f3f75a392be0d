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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from .base import Feed

INPUT_IDS, NEW_TOKENS = "input_ids", "new_tokens"
OUTPUT_NAMES = ("logits", "token_logprobs", "tokens", "token_scores")
PAST_PREFIX, PRESENT_PREFIX = "past_key_values", "present"
BEAM_IDX = "beam_idx"  # a stateful IR's input (optimum-intel's layout): which beam each cache row belongs to


class Decoder(Protocol):
    runtime: str
    settings: dict[str, Any]

    def reset(self) -> None: ...

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
        ids = np.asarray(feed.get(INPUT_IDS))
        if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] < 1 or not np.issubdtype(ids.dtype, np.integer):
            raise UsageError(f"a generative model's feed needs {INPUT_IDS} [1, T] of integers, not {list(ids.shape)} {ids.dtype}")
        ids = ids.astype(np.int64)
        count = int(np.asarray(feed.get(NEW_TOKENS, [0])).ravel()[0])
        start = time.perf_counter()
        self.decoder.reset()
        logits = np.asarray(self.decoder.step(ids, 0), dtype=np.float32)
        tokens = [int(np.argmax(logits[0, -1]))] if count else []
        scores = [float(logits[0, -1, tokens[0]])] if count else []
        timing = Timing(ids.shape[1], (time.perf_counter() - start) * 1e3)
        past = ids.shape[1]
        while len(tokens) < count:
            begin = time.perf_counter()
            step = self.decoder.step(np.array([[tokens[-1]]], dtype=np.int64), past)
            tokens.append(int(np.argmax(step[0, -1])))
            scores.append(float(step[0, -1, tokens[-1]]))
            past += 1
            timing.step_ms.append((time.perf_counter() - begin) * 1e3)
        self.timings.append(timing)
        logprobs = log_softmax(logits[0])
        targets = ids[0, 1:]
        token_logprobs = logprobs[np.arange(len(targets)), targets][None].astype(np.float32)
        return [logits, token_logprobs, np.array([tokens], dtype=np.int64), np.array([scores], dtype=np.float32)]

