"""The coverage table of docs/coverage.md, generated from this test: every task family compiled for every built-in
target on a tiny random-weight model the test makes, and what became of each (issue 19).

The table in the docs must be the one this run produces; when a change alters it, regenerate it:

    EDGEKIT_WRITE_COVERAGE=1 python -m pytest tests/test_coverage.py

A cell says `built, verified, benchmarked` when the target's artifact was built, verified against the original
and timed; `built, verified` when its device is not on this machine (it was verified on the CPU); `not built: why`
when the target failed (the others still built). The task column names the family that judged the report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import edgekit
from edgekit import tasks
from edgekit.source import resolve_source

import models

TARGETS = ["cpu", "intel-cpu", "cuda", "intel-gpu", "intel-npu"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "coverage.md"


def _cnn_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).eval()


# family -> (what the model is, how to make it: (model, extra compile options))
CASES = {
    "classifier": ("BERT text classifier (2 layers)", lambda d: (models.tiny_bert(d / "m"), {})),
    "embedding": ("BERT encoder, feature extraction", lambda d: (models.tiny_bert(d / "m", task="feature-extraction"), {})),
    "sequence": ("BERT token classifier", lambda d: (models.tiny_bert(d / "m", task="token-classification"), {})),
    "detection": ("YOLOS detector, 64x64", lambda d: (models.tiny_yolos(d / "m"), {"data": str(models.images(d / "i", 8, 64))})),
    "segmentation": ("SegFormer segmenter, 64x64",
                     lambda d: (models.tiny_segformer(d / "m"), {"data": str(models.images(d / "i", 8, 64))})),
    "classifier (audio)": ("wav2vec2 audio classifier, built-in speech, 1 s clips",
                           lambda d: (models.tiny_wav2vec2(d / "m"), {"shapes": ["input_values=1,16000"]})),
    "ctc": ("wav2vec2 CTC recogniser, built-in speech, 1 s clips",
            lambda d: (models.tiny_wav2vec2_ctc(d / "m"), {"shapes": ["input_values=1,16000"]})),
    "speech2text": ("Whisper encoder-decoder (2+2 layers), built-in speech and its texts, INT4 weights",
                    lambda d: (models.tiny_whisper(d / "m"), {})),
    "depth": ("DPT depth estimator, 64x64",
              lambda d: (models.tiny_dpt(d / "m"), {"data": str(models.images(d / "i", 8, 64))})),
    "vision-language": ("CLIP, both towers, 32x32, built-in class prompts",
                        lambda d: (models.tiny_clip(d / "m"), {"data": str(models.images(d / "i", 8, 32))})),
    "generation": ("Llama-style decoder LM (2 layers), INT4 weights",
                   lambda d: (models.tiny_causal_lm(d / "m", "llama", steps=60), {})),
    "text2text": ("T5 encoder-decoder (2+2 layers), INT4 weights",
                  lambda d: (models.tiny_seq2seq(d / "m", "t5", steps=60), {})),
    "tensor": ("CNN as an .onnx file", lambda d: (models.tiny_cnn_onnx(d / "m.onnx"), {"shapes": ["input=1,3,32,32"]})),
    "tensor (stateful)": ("recurrent state fed back, an If subgraph (.onnx)",
                          lambda d: (models.stateful_vad_onnx(d / "vad.onnx"), {})),
    "tensor (nn.Module)": ("CNN as a PyTorch module from Python",
                           lambda d: (_cnn_module(), {"example_inputs": (torch.randn(1, 3, 32, 32),), "input_names": ["image"]})),
}


def _cell(report, target: str) -> str:
    failed = {f.target: f for f in report.failed}
    if target in failed:
        return f"not built: {failed[target].error[:90]}"
    result = next(t for t in report.targets if t.target == target)
    return "built, verified, benchmarked" if result.measured else "built, verified"


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[str, str, dict[str, str]]]:
    profile = tmp_path_factory.mktemp("profile") / "quick.toml"
    profile.write_text('precision = "int8"\nfp32_candidate = false\n[budgets]\nmin_cosine = 0.5\n'
                       "[data]\ncalibration_samples = 8\neval_samples = 4\nseed = 0\n[recovery]\nenabled = false\n"
                       "[benchmark]\nsequence_length = 16\nmin_runs = 5\nmin_seconds = 0.1\nmax_seconds = 1.0\n")
    found = {}
    for family, (what, make) in CASES.items():
        folder = tmp_path_factory.mktemp(family.split()[0])
        model, options = make(folder)
        report = edgekit.compile(model if isinstance(model, nn.Module) else str(model), targets=TARGETS,
                                 profile=str(profile), output=folder / "out", **options)
        judged = tasks.for_task(None if report.task == "unknown" else report.task)
        if not isinstance(model, nn.Module):  # the family as it judged this model (a Whisper is not a CTC recogniser)
            judged = judged.for_source(resolve_source(str(model), None))
        judged = judged.name
        found[family] = (what, f"{report.task} ({judged})", {t: _cell(report, t) for t in TARGETS})
    return found


def render(outcomes: dict[str, tuple[str, str, dict[str, str]]]) -> str:
    lines = ["# Coverage: task family × target", "",
             "Generated by `tests/test_coverage.py` (do not edit by hand): each family compiled for every built-in target",
             "on a tiny random-weight model the test makes, on a machine with no GPU or NPU. `built, verified`: the",
             "artifact was built and verified against the original on the CPU (its device is not here, so it was not",
             "timed); `benchmarked`: also timed side by side with the original. Regenerate with",
             "`EDGEKIT_WRITE_COVERAGE=1 python -m pytest tests/test_coverage.py`.", "",
             "| case | model | task (family that judged it) | " + " | ".join(f"`{t}`" for t in TARGETS) + " |",
             "|---|---|---|" + "---|" * len(TARGETS)]
    for family, (what, task, cells) in outcomes.items():
        lines.append(f"| {family} | {what} | {task} | " + " | ".join(cells[t].replace("|", "\\|") for t in TARGETS) + " |")
    lines += ["", "An NPU takes no encoder-decoder yet (text2text, speech2text): each decoder step would need static shapes.",
              "The figures against references in the data (mAP on COCO boxes, WER on reference transcripts) are tested",
              "in tests/test_detection_family.py and tests/test_audio.py.", ""]
    return "\n".join(lines)


def test_every_family_builds_and_verifies_for_cpu_and_intel_cpu(outcomes):
    for family, (_, _, cells) in outcomes.items():
        for target in ("cpu", "intel-cpu"):
            assert cells[target].startswith("built, verified"), (family, target, cells[target])


def test_the_coverage_table_in_the_docs_is_this_runs(outcomes):
    from edgekit.config import load_target
    from edgekit.devices import probe_all

    present = [n for n, a in probe_all([load_target(t) for t in TARGETS[2:]]).items() if a.present]
    if present:  # the table describes a machine without them; here they would be timed too
        pytest.skip(f"the table is generated on a machine without GPU or NPU; this one has {', '.join(present)}")
    table = render(outcomes)
    if os.environ.get("EDGEKIT_WRITE_COVERAGE"):
        DOC.write_text(table)
    assert DOC.is_file() and DOC.read_text() == table, (
        "docs/coverage.md is not what the suite produces: EDGEKIT_WRITE_COVERAGE=1 python -m pytest tests/test_coverage.py")
