"""Text-to-text encoder-decoders (issue 19): a tiny trained T5 compiled for cpu and intel-cpu (INT4 weights, every
graph), judged by the generation figures over a teacher-forced target and its greedy output, benchmarked with the
encoder in time to first token, verified, benchmarked again from the bundle and embedded; BART for the device targets,
an NPU refused by name while the others build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import main
from edgekit.runtimes.generation import DECODER_INPUT_IDS, INPUT_IDS, NEW_TOKENS
from edgekit.runtimes.onnxruntime import open_onnx
from edgekit.source import infer_task
from edgekit.verify_bundle import verify

from models import tiny_seq2seq


@pytest.fixture(scope="module")
def t5(tmp_path_factory) -> Path:
    return tiny_seq2seq(tmp_path_factory.mktemp("t5") / "tiny-t5", "t5")


@pytest.fixture(scope="module")
def t5_bundle(t5, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5-out") / "bundle"
    report = edgekit.compile(str(t5), targets=["cpu", "intel-cpu"], output=str(out), cache=False,
                             overrides={"eval_samples": 8, "calibration_samples": 8})
    return out, report


def test_encoder_decoders_are_inferred_as_text_to_text():
    assert infer_task({"architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}, "transformers") == \
        "text2text-generation"
    assert infer_task({"architectures": ["MarianMTModel"], "is_encoder_decoder": True}, "transformers") == "text2text-generation"
    # the exporters call BART's generation head fill-mask first: its generation is what ships
    assert infer_task({"architectures": ["BartForConditionalGeneration"], "is_encoder_decoder": True}, "transformers") == \
        "text2text-generation"


def test_chrf_scores_character_ngrams():
    from edgekit.tasks.generation import chrf

    assert chrf(["the cat sat on the mat"], ["the cat sat on the mat"]) == 100.0
    assert chrf(["abc"], ["xyz"]) == 0.0
    near = chrf(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert 50.0 < near < chrf(["the cat sat on the mat"], ["the cat sat on the ma"]) < 100.0  # closer scores higher
    assert chrf([""], [""]) == 100.0


def test_the_exported_graphs_generate_what_pytorch_generates(t5, tmp_path):
    """The loop over the ONNX encoder and merged decoder (runtimes/generation.py rule 4) against transformers' own
    greedy generate()."""
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from edgekit.stages.export import SEQ2SEQ_FILES

    main_export(str(t5), output=tmp_path, task="text2text-generation-with-past")
    for theirs, ours in SEQ2SEQ_FILES.items():
        (tmp_path / theirs).rename(tmp_path / ours)
    session = open_onnx(tmp_path / "model.onnx", 1)
    tokenizer, model = AutoTokenizer.from_pretrained(str(t5)), AutoModelForSeq2SeqLM.from_pretrained(str(t5)).eval()
    ids = tokenizer("The committee reviewed the budget and approved the new plan for the", return_tensors="np")["input_ids"]
    start = model.config.decoder_start_token_id
    outputs = session.run({INPUT_IDS: ids, DECODER_INPUT_IDS: np.array([[start]]), NEW_TOKENS: np.array([12])})
    with torch.no_grad():
        expected = model.generate(torch.tensor(ids), max_new_tokens=12, min_new_tokens=12, do_sample=False, num_beams=1)
    assert outputs[2][0].tolist() == expected[0, 1:].tolist()
    assert len(set(expected[0, 1:].tolist())) > 2  # a trained model: not one token repeated
    assert session.timings[-1].prompt_tokens == ids.shape[1] and len(session.timings[-1].step_ms) == 11


def test_t5_compiles_for_cpu_and_intel_cpu_with_generation_figures(t5_bundle):
    out, report = t5_bundle
    data = json.loads((out / "report.json").read_text())
    assert data["task"] == "text2text-generation" and not data.get("failed")
    rows = {t["target"]: t for t in data["targets"]}
    assert set(rows) == {"cpu", "intel-cpu"}
    for row in rows.values():
        assert row["precision"] == "int4" and row["verdict"] in ("pass", "fail")
        gen = row["accuracy"]["generation"]
        assert gen["ppl_original"] > 1 and gen["positions"] > 0 and gen["new_tokens"] == 32
        assert 0.5 < row["accuracy"]["token_agreement"] <= 1.0  # a trained tiny T5: INT4 keeps most next tokens
        assert 0.0 <= gen["chrf"] <= 100.0 and (gen["chrf"] == 100.0 or gen["greedy_identical"] < 1.0)
        assert row["generation"]["ttft_ms"]["p50"] > 0 and row["generation"]["tokens_per_s"] > 0
    assert any("the encoder's weight MatMuls INT4 too" in n for n in rows["cpu"]["notes"])
    assert {p.name for p in (out / "cpu").iterdir()} >= {"model.onnx", "encoder.onnx", "config.json"}
    assert {p.name for p in (out / "intel-cpu").iterdir()} >= {"model.xml", "model.bin", "encoder.xml", "encoder.bin",
                                                              "decoder_first.xml", "decoder_first.bin"}
    # every graph counts in the size, the original's too (its encoder and merged decoder)
    assert rows["cpu"]["size_bytes"] == sum((out / "cpu" / n).stat().st_size for n in ("model.onnx", "encoder.onnx"))
    assert data["original"]["size_bytes"] > rows["cpu"]["size_bytes"]
    assert verify(out).ok


def test_a_t5_bundle_is_benchmarked_and_embedded_whole(t5_bundle, tmp_path):
    out, _ = t5_bundle
    timed = CliRunner().invoke(main, ["bench", str(out), "--json", str(tmp_path / "bench.json")])
    assert timed.exit_code == 0, timed.output
    timings = json.loads((tmp_path / "bench.json").read_text())
    assert "cpu" in json.dumps(timings) and "intel-cpu" in json.dumps(timings)
    embedded = CliRunner().invoke(main, ["embed", str(out / "intel-cpu"), "--format", "bin", "-o", str(tmp_path / "fw")])
    assert embedded.exit_code == 0, embedded.output
    assert {"encoder.xml", "decoder_first.xml", "model.xml"} <= {p.name for p in (tmp_path / "fw").iterdir()}


def test_bart_builds_for_the_device_targets_and_an_npu_is_refused_by_name(tmp_path):
    model = tiny_seq2seq(tmp_path / "bart", "bart", steps=20)
    report = edgekit.compile(str(model), targets=["cuda", "intel-gpu", "intel-npu"], output=str(tmp_path / "out"),
                             cache=False, no_bench=True, overrides={"eval_samples": 4, "calibration_samples": 4})
    assert [t.target for t in report.targets] == ["cuda", "intel-gpu"]  # built, verified on the CPU
    (npu,) = report.failed
    assert npu.target == "intel-npu" and npu.exit_code == 2 and "needs static shapes for every decoder step" in npu.error
    assert report.exit_code == 2
