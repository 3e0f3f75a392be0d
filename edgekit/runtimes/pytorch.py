"""PyTorch: the original model, eager, in FP32, as the reference every artifact is compared with.

Rules:
1. A `TorchSession` is called the way the model's ONNX export is called: a sentence-transformers model
   with the feed as one dict, any other model with the feed as keyword arguments; its outputs are taken
   by the export's output names, in that order, as FP32 numpy arrays.
2. It builds no artifacts: no target names it (`recipe` refuses), and `open` needs the model object, which
   compile and bench pass to `TorchSession` directly (stages/export.py `load_reference`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InternalError, UsageError
from .base import Feed, Runtime, RuntimeDevices, register


class TorchSession:
    """The original PyTorch model, called the way its ONNX export is called."""

    runtime = "pytorch"

    def __init__(self, model: Any, library: str, output_names: list[str], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch = torch
        self._model = model.eval()
        self._library = library
        self.output_names = list(output_names)
        self.settings = torch_settings(threads)

    def run(self, feed: Feed) -> list[np.ndarray]:
        torch = self._torch
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
        with torch.inference_mode():
            outputs = self._model(inputs) if self._library == "sentence_transformers" else self._model(**inputs)
        found = dict(outputs.items()) if hasattr(outputs, "items") else {}
        missing = [n for n in self.output_names if n not in found]
        if missing:
            raise InternalError(f"the PyTorch model returned no output named {missing[0]} (it returned {', '.join(found)})")
        return [found[n].detach().float().numpy() for n in self.output_names]


class ModuleSession:
    """A PyTorch module given from Python, called with the feed's inputs in the order of their names; a tuple,
    list or dict of outputs is read in order."""

    runtime = "pytorch"

    def __init__(self, module: Any, input_names: list[str], output_names: list[str], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch = torch
        self._module = module.eval()
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.settings = {**torch_settings(threads), "mode": "eager, inference_mode (the module given)"}

    def run(self, feed: Feed) -> list[np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self.input_names]
        with torch.inference_mode():
            outputs = self._module(*args)
        if isinstance(outputs, torch.Tensor):
            flat = [outputs]
        elif isinstance(outputs, dict) or (hasattr(outputs, "values") and hasattr(outputs, "keys")):
            flat = list(outputs.values())
        else:
            flat = list(outputs)
        return [t.detach().float().numpy() for t in flat]


class TorchDecoder:
    """A Hugging Face causal LM as a generation.Decoder: the model's own KV cache (`past_key_values`), eager FP32."""

    start_id = None  # decoder-only (generation rule 4)

    runtime = "pytorch"

    def __init__(self, model: Any, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch, self._model, self._cache = torch, model.eval(), None
        self.settings = {**torch_settings(threads), "generation": {"kv_cache": "the model's own (transformers DynamicCache)"}}

    def reset(self, feed=None) -> None:  # a decoder-only model: the cache emptied (generation rule 4)
        self._cache = None

    def step(self, ids: np.ndarray, past: int) -> np.ndarray:
        torch = self._torch
        length = ids.shape[1]
        with torch.inference_mode():
            out = self._model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones((1, past + length), dtype=torch.long),
                              position_ids=torch.arange(past, past + length).unsqueeze(0), past_key_values=self._cache,
                              use_cache=True)
        self._cache = out.past_key_values
        return out.logits.float().numpy()


class TorchSeq2SeqDecoder(TorchDecoder):
    """A Hugging Face encoder-decoder (T5, BART, Marian) as a generation.Decoder (rule 4 there): the encoder run once
    per input, the decoder with the model's own cache."""

    def __init__(self, model: Any, threads: int) -> None:
        super().__init__(model, threads)
        self.start_id = int(model.config.decoder_start_token_id)
        self._encoded, self._mask = None, None

    def reset(self, feed=None) -> None:
        torch = self._torch
        if feed is not None:  # token ids and their mask, or audio features (Whisper)
            encoder = self._model.get_encoder()
            takes = inspect.signature(encoder.forward).parameters
            source = {k: torch.from_numpy(np.asarray(v)) for k, v in feed.items() if k in takes}
            if "input_ids" in source:
                self._mask = source.setdefault("attention_mask", torch.ones(tuple(source["input_ids"].shape), dtype=torch.long))
            with torch.inference_mode():
                self._encoded = encoder(**source, **({"use_cache": False} if "use_cache" in takes else {}))  # T5's stack
        self._cache = None

    def step(self, ids: np.ndarray, past: int) -> np.ndarray:
        with self._torch.inference_mode():
            out = self._model(encoder_outputs=self._encoded, attention_mask=self._mask,
                              decoder_input_ids=self._torch.from_numpy(ids), past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        return out.logits.float().numpy()


def original_session(model: Any, library: str, output_names: list[str], threads: int, generative: bool = False):
    """The original as a session: a KV-cache decoder through the generation loop (runtimes/generation.py), any other
    model called the way its export is (rule 1)."""
    if generative:
        from .generation import GenerationSession

        encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
        return GenerationSession((TorchSeq2SeqDecoder if encoder_decoder else TorchDecoder)(model, threads))
    return TorchSession(model, library, output_names, threads)


def torch_settings(threads: int) -> dict[str, Any]:
    """What a TorchSession records, known without importing torch (for a reference that was never loaded)."""
    from importlib import metadata

    return {"runtime": "pytorch", "version": metadata.version("torch"), "num_threads": threads,
            "precision": "fp32", "mode": "eager, inference_mode"}


@register
class PyTorch(Runtime):
    name = "pytorch"
    label = "PyTorch"
    suffix = ".pt"
    reads = ()
    builds_artifacts = False

    def probe(self) -> RuntimeDevices:
        from importlib import metadata

        return RuntimeDevices("pytorch", metadata.version("torch"), ("CPU",))

    def open(self, artifact: Path, settings: Mapping[str, Any], threads: int) -> TorchSession:
        raise UsageError("the pytorch runtime runs the original model only; open it with stages.export.load_reference")

    def recipe(self, inputs):
        raise UsageError(f"target {inputs.target.name}: the pytorch runtime builds no artifacts (it runs the original)")
