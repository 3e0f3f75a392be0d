"""all-MiniLM-L6-v2 exported to ONNX with a compile's split of the corpus: what the benchmarks run it on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class MiniLM:
    export: Any  # edgekit.stages.export.ExportResult
    specs: list  # the graph's input specs
    tokenizer: Any
    texts: list[str]  # the whole corpus
    calibration: list  # the 64 feeds a compile calibrates with
    unseen: list  # the feeds neither calibration nor a compile's 32 evaluation paragraphs use


def export_with_split(work: Path) -> MiniLM:
    """Export the embedded model into `work` and split the corpus as a compile does (eval 32, calibration 64)."""
    from transformers import AutoTokenizer

    from edgekit.data import CORPUS, read_lines, text_feeds
    from edgekit.graph import input_specs, load
    from edgekit.source import resolve_source
    from edgekit.stages.export import export_huggingface

    export = export_huggingface(resolve_source(None), work / "export")
    specs = input_specs(load(export.onnx_path))
    tokenizer = AutoTokenizer.from_pretrained(str(export.folder))
    texts = read_lines(CORPUS)
    order = np.random.default_rng(0).permutation(len(texts))
    calibration = text_feeds(tokenizer, [texts[i] for i in order[32:96]], specs, 512)
    unseen = text_feeds(tokenizer, [texts[i] for i in order[96:]], specs, 512)
    return MiniLM(export, specs, tokenizer, texts, calibration, unseen)
