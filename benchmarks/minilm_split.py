"""all-MiniLM-L6-v2 exported to ONNX with a compile's split of the corpus: what the A/B benchmarks quantise with."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def export_with_split(work: Path):
    """Export the embedded model into `work`; return (export, input specs, the 64 calibration feeds a compile
    uses, the feeds neither calibration nor a compile's 32 evaluation paragraphs use)."""
    from transformers import AutoTokenizer

    from edgekit.data import CORPUS, read_lines, text_feeds
    from edgekit.graph import input_specs, load
    from edgekit.source import resolve_source
    from edgekit.stages.export import export_huggingface

    export = export_huggingface(resolve_source(None), work / "export")
    specs = input_specs(load(export.onnx_path))
    tokenizer = AutoTokenizer.from_pretrained(str(export.folder))
    texts = read_lines(CORPUS)
    order = np.random.default_rng(0).permutation(len(texts))  # a compile's split: eval 32, calibration 64
    calibration = text_feeds(tokenizer, [texts[i] for i in order[32:96]], specs, 512)
    unseen = text_feeds(tokenizer, [texts[i] for i in order[96:]], specs, 512)
    return export, specs, calibration, unseen
