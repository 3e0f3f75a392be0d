"""Generative decoders (issue 16): a tiny Llama-style model compiled for cpu and intel-cpu (INT4) and intel-npu (built,
verified on the CPU), with perplexity, next-token agreement, time to first token and tokens/s in report.json, and
`edgekit verify` passing on the bundle; Qwen2- and GPT-2-style models build for the other targets; bad input exits 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.errors import UsageError
from edgekit.judge import judge
from edgekit.config import Budgets
from edgekit.runtimes.generation import GenerationSession, cache_pairs
from edgekit.stages.weights import fitting_group, matmul_weights
from edgekit.runtimes.generation import Timing
from edgekit.tasks.generation import timing_figures
from edgekit.verify_bundle import verify

from models import tiny_bert, tiny_causal_lm


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("llama") / "tiny-llama", "llama")


@pytest.fixture(scope="module")
def llama_bundle(llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama-out") / "bundle"
    report = edgekit.compile(str(llama), targets=["cpu", "intel-cpu", "intel-npu"], output=str(out), cache=False)
    return out, report


def test_llama_compiles_for_cpu_intel_cpu_and_npu_with_generation_figures(llama_bundle):
    out, report = llama_bundle
    data = json.loads((out / "report.json").read_text())
    assert data["task"] == "text-generation"
    rows = {t["target"]: t for t in data["targets"]}
    assert set(rows) == {"cpu", "intel-cpu", "intel-npu"} and not data.get("failed")
    for name, row in rows.items():
        assert row["precision"] == "int4"
        gen = row["accuracy"]["generation"]
        assert gen["ppl_original"] > 1 and gen["ppl_artifact"] > 1
        assert abs(gen["ppl_increase"] - (gen["ppl_artifact"] / gen["ppl_original"] - 1)) < 1e-9
        assert 0.5 < row["accuracy"]["token_agreement"] <= 1.0  # a trained tiny LM: INT4 keeps most next tokens
        assert gen["new_tokens"] == 32 and 0 <= gen["greedy_prefix_mean"] <= 32
        budgets = {c["budget"]: c for c in row["budgets"]}
        assert budgets["max_ppl_increase"]["applicable"] and budgets["min_token_agreement"]["applicable"]
        assert budgets["min_cosine"].get("gating") is False  # logit cosine is reported, not gated
    for name in ("cpu", "intel-cpu"):  # measured here: time to first token, per output token, tokens/s
        timing = rows[name]["generation"]
        assert timing["ttft_ms"]["p50"] > 0 and timing["tpot_ms"]["p50"] > 0 and timing["tokens_per_s"] > 0
        assert [t["prompt_tokens"] for t in timing["ttft_at"]] == [128]
    assert data["original"]["generation"]["tokens_per_s"] > 0
    assert "generation" not in rows["intel-npu"]  # no NPU here: built and verified on the CPU, not timed
    assert "## Generation" in (out / "report.md").read_text()


def test_llama_artifacts_are_weight_compressed_as_each_runtime_runs_them(llama_bundle):
    out, _ = llama_bundle
    import onnx

    graph = onnx.load(str(out / "cpu" / "model.onnx"))
    assert sum(n.op_type == "MatMulNBits" for n in graph.graph.node) == 15  # 2 layers x 7 projections + the head
    assert matmul_weights(graph) == []  # no float weight MatMul left (attention's score MatMuls have no weights)
    rows = {t["target"]: t for t in json.loads((out / "report.json").read_text())["targets"]}
    assert rows["cpu"]["quantization"]["weights"] == "int4" and rows["cpu"]["quantization"]["symmetric"] is False
    npu = rows["intel-npu"]["quantization"]
    assert npu["symmetric"] is True and npu["group_size"] == -1  # what OpenVINO's NPU LLM pipeline runs
    record = json.loads((out / "intel-npu" / "runtime.json").read_text())
    assert record["verified_with"]["generation"]["npu"] == {"MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}
    for name in ("cpu", "intel-cpu", "intel-npu"):  # a device app gets the tokenizer and the generation config
        assert (out / name / "tokenizer.json").is_file() and (out / name / "generation_config.json").is_file()
    original = json.loads((out / "report.json").read_text())["original"]["size_bytes"]
    assert all(row["size_bytes"] < 0.5 * original for row in rows.values())  # 4-bit weights, an 8-bit head


def test_verify_reruns_the_stored_greedy_continuation(llama_bundle, tmp_path):
    out, _ = llama_bundle
    result = verify(out)
    assert result.ok, result.mismatch
    with np.load(out / "cpu" / "reference.npz") as ref:
        assert ref["output:tokens"].shape == (1, 32) and ref["output:tokens"].dtype == np.int64


def test_verify_fails_when_one_generated_token_differs(llama_bundle, tmp_path):
    """Integer outputs match exactly (verify rule 6): a continuation one token off is a mismatch, not noise."""
    from edgekit.bundle import read_bundle, write_npz
    from edgekit.verify_bundle import check_target

    out, _ = llama_bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    path = copy / "cpu" / "reference.npz"
    with np.load(path) as ref:
        arrays = {k: ref[k] for k in ref.files}
    arrays["output:tokens"] = arrays["output:tokens"].copy()
    arrays["output:tokens"][0, 5] = (arrays["output:tokens"][0, 5] + 1) % 512
    write_npz(path, arrays)
    _, mismatch = check_target(read_bundle(copy).target("cpu"))
    assert mismatch is not None and "tokens" in mismatch and "position 5" in mismatch


@pytest.mark.parametrize("arch,targets", [("qwen2", ["cpu", "cuda"]), ("gpt2", ["intel-cpu", "intel-gpu"])])
def test_other_decoder_families_build_and_verify(arch, targets, tmp_path):
    model = tiny_causal_lm(tmp_path / arch, arch, steps=60)
    report = edgekit.compile(str(model), targets=targets, output=str(tmp_path / "out"), cache=False, no_bench=True)
    assert not report.failed and [t.target for t in report.targets] == targets
    for t in report.targets:
        assert t.accuracy.generation["ppl_increase"] < 0.5 and t.accuracy.token_agreement > 0.5
    assert verify(tmp_path / "out").ok


def test_cache_pairs_find_a_kv_cache_decoder_only():
    assert cache_pairs(["input_ids", "attention_mask", "past_key_values.0.key", "past_key_values.0.value"],
                       ["logits", "present.0.key", "present.0.value"]) == [
        ("past_key_values.0.key", "present.0.key"), ("past_key_values.0.value", "present.0.value")]
    assert cache_pairs(["input_ids", "state"], ["logits", "stateN"]) == []
    assert cache_pairs(["pixel_values", "past_key_values.0.key"], ["logits", "present.0.key"]) == []


def test_group_size_falls_back_to_one_that_divides_every_weight():
    assert fitting_group([128, 256], 128) == (128, "")
    size, note = fitting_group([96, 256], 128)
    assert size == 32 and "96" in note
    assert fitting_group([96], -1) == (-1, "")


def test_timing_figures_read_the_runs_at_one_prompt_length():
    runs = [Timing(32, 10.0, [2.0, 2.0, 4.0]), Timing(32, 12.0, [2.0, 2.0, 2.0]), Timing(128, 30.0, [])]
    main = timing_figures(runs, 32, 4)
    assert main["runs"] == 2 and main["tpot_ms"]["p50"] == 2.0 and main["tokens_per_s"] == 500.0
    assert timing_figures(runs, 128, 1)["ttft_ms"]["p50"] == 30.0 and "tpot_ms" not in timing_figures(runs, 128, 1)
    assert timing_figures(runs, 64, 4) is None


def test_perplexity_budget_is_relative_and_inclusive():
    budgets = Budgets(min_cosine=0.0, max_ppl_increase=0.05)
    check = next(c for c in judge(budgets, 1.0, None, None, 0, {"ppl_increase": (10.0, 10.5)}) if c.budget == "max_ppl_increase")
    assert check.passed and abs(check.measured - 0.05) < 1e-12
    check = next(c for c in judge(budgets, 1.0, None, None, 0, {"ppl_increase": (10.0, 10.6)}) if c.budget == "max_ppl_increase")
    assert not check.passed
    check = next(c for c in judge(budgets, 1.0, None, None, 0, {"ppl_increase": "not a generative model"})
                 if c.budget == "max_ppl_increase")
    assert not check.applicable


def test_a_session_refuses_a_feed_without_token_ids():
    class Never:
        runtime, settings = "none", {}

        def reset(self):
            raise AssertionError("not reached")

    with pytest.raises(UsageError, match="input_ids"):
        GenerationSession(Never()).run({"input_ids": np.zeros((2, 3), np.float32)})


# ------------------------------------------------------------------ bad input: exit 2, one line


def test_text_generation_asked_of_a_model_without_a_causal_lm_head_is_refused(tmp_path):
    model = tiny_bert(tmp_path / "bert")
    with pytest.raises(UsageError, match="causal language-model head"):
        edgekit.compile(str(model), task="text-generation", targets=["cpu"], output=str(tmp_path / "out"), cache=False)


def test_a_decoder_without_its_tokenizer_is_refused(llama, tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(llama, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(UsageError, match="tokenizer"):
        edgekit.compile(str(folder), targets=["cpu"], output=str(tmp_path / "out"), cache=False, no_bench=True)
    assert not (tmp_path / "out").exists()


def test_a_prompt_longer_than_the_npu_static_prompt_length_is_refused_before_building(llama, tmp_path):
    profile = tmp_path / "short.toml"
    profile.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.9\n[generation]\nmax_prompt_len = 64\n')
    with pytest.raises(UsageError, match="static prompt length"):
        edgekit.compile(str(llama), targets=["intel-npu"], profile=str(profile), output=str(tmp_path / "out"), cache=False)
    assert not (tmp_path / "out").exists()


def test_a_decoder_with_remote_code_is_refused(llama, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_x.py").write_text("raise SystemExit('never run')\n")
    with pytest.raises(UsageError, match="remote|auto_map|code"):
        edgekit.compile(str(folder), targets=["cpu"], output=str(tmp_path / "out"), cache=False)


def test_generation_profile_keys_are_checked(tmp_path):
    from edgekit.config import load_profile

    bad = tmp_path / "bad.toml"
    bad.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.9\n[generation]\ngroup_size = 100\n')
    with pytest.raises(UsageError, match="group_size"):
        load_profile(str(bad))
    good = tmp_path / "good.toml"
    good.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.9\nmax_ppl_increase = 0.05\n'
                    '[generation]\ngroup_size = -1\nweights = "int8"\nprompt_lengths = [512, 32]\n')
    profile = load_profile(str(good))
    assert profile.generation_group_size == -1 and profile.generation_prompt_lengths == (32, 512)
    assert profile.budgets.max_ppl_increase == 0.05


def test_embed_bin_carries_the_tokenizer_and_generation_config(llama_bundle, tmp_path):
    from edgekit.embed import embed

    out, _ = llama_bundle
    folder = embed(out / "intel-cpu", "bin", tmp_path / "fw")
    names = {p.name for p in folder.iterdir()}
    assert {"model.xml", "model.bin", "runtime.json", "tokenizer.json", "generation_config.json"} <= names
    assert (folder / "tokenizer.json").read_bytes() == (out / "intel-cpu" / "tokenizer.json").read_bytes()


def test_the_review_shows_the_generation_table_in_markdown_and_html(llama_bundle):
    from edgekit.review import review

    out, _ = llama_bundle
    text, _ = review([out], "md")
    section = text.split("### Generation", 1)[1]
    assert "| original |" in section and "| cpu |" in section and "tokens/s" in section
    page, _ = review([out], "html")
    assert "<h2>Generation</h2>" in page and "next-token agreement" in page


def test_data_aware_compression_runs_on_the_held_out_calibration_texts(llama, tmp_path):
    profile = tmp_path / "awq.toml"
    profile.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.5\n[data]\ncalibration_samples = 8\neval_samples = 8\n'
                       '[generation]\ndata_aware = ["awq", "scale_estimation"]\n')
    report = edgekit.compile(str(llama), targets=["intel-cpu"], profile=str(profile), output=str(tmp_path / "out"),
                             cache=False, no_bench=True)
    target = report.targets[0]
    assert target.quantization["data_aware"] == ["awq", "scale_estimation"]
    assert any("data-aware: awq, scale_estimation on 8 calibration texts" in n for n in target.notes)
    assert target.accuracy.token_agreement > 0.5
    bad = tmp_path / "bad.toml"
    bad.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.5\n[generation]\ndata_aware = ["gptq"]\n')
    with pytest.raises(UsageError, match="data_aware"):
        edgekit.compile(str(llama), targets=["intel-cpu"], profile=str(bad), output=str(tmp_path / "o2"), cache=False)
