"""End to end through the CLI, on tiny models the tests build and on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit.cli import main
from edgekit.source import sha256_file


def run(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


def check_bundle(out: Path) -> dict:
    """The bundle is complete: report, manifest with correct hashes, artifacts, no temp folders."""
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(listed) == on_disk
    for path, entry in listed.items():
        assert entry["sha256"] == sha256_file(out / path)
        assert entry["size"] == (out / path).stat().st_size
    for package in ("edgekit", "torch", "transformers", "optimum", "onnx", "onnxruntime", "openvino", "nncf"):
        assert manifest["versions"][package], package
    assert not list(out.parent.glob(f".{out.name}.partial-*"))
    assert (out / "report.md").read_text().startswith("# edgekit report")
    for t in report["targets"]:
        assert (out / t["artifact"]).is_file()
        for key in ("p50", "p90", "p99"):
            assert t["latency_ms"][key] > 0
        assert t["latency_ms"]["p50"] <= t["latency_ms"]["p90"] <= t["latency_ms"]["p99"]
        assert t["speedup_p50"] == pytest.approx(report["original"]["latency_ms"]["p50"] / t["latency_ms"]["p50"])
        assert 0 < t["size_bytes"] == sum((out / t["artifact"]).with_suffix(s).stat().st_size
                                          for s in ([".xml", ".bin"] if t["runtime"] == "openvino" else [".onnx"]))
        acc = t["accuracy"]
        assert -1 <= acc["cosine_min"] <= acc["cosine_mean"] <= 1
        assert acc["max_abs_error"] >= 0
        assert t["verdict"] in ("pass", "fail")
    return report


def test_text_classifier_both_targets(bert_dir, quick_profile, tmp_path):
    out = tmp_path / "bundle"
    result = run(str(bert_dir), "--target", "cpu", "--target", "intel-cpu", "--profile", str(quick_profile), "-o", str(out))
    assert result.exit_code == 0, result.output
    report = check_bundle(out)
    assert report["task"] == "text-classification"
    assert report["original"]["runtime"] == "pytorch"
    assert report["original"]["export_check_max_abs_error"] < 1e-3
    assert report["data"]["synthetic"] is False and "corpus" in report["data"]["origin"]
    cpu, ov = report["targets"]
    assert (cpu["target"], cpu["runtime"], cpu["precision"], cpu["artifact"]) == ("cpu", "onnxruntime", "int8", "cpu/model.onnx")
    assert (ov["target"], ov["runtime"], ov["artifact"]) == ("intel-cpu", "openvino", "intel-cpu/model.xml")
    for t in (cpu, ov):
        assert t["accuracy"]["top1_agreement"] >= 0.75
        assert t["accuracy"]["cosine_min"] >= 0.9
        assert t["verdict"] == "pass"
        for name in ("tokenizer.json", "vocab.txt", "config.json", "runtime.json"):
            assert (out / t["target"] / name).is_file(), name
    # The artifacts really are INT8.
    ops = {n.op_type for n in onnx.load(str(out / "cpu/model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "FakeQuantize" in (out / "intel-cpu/model.xml").read_text()
    # The report table is printed at the end of the command.
    assert "| cpu | onnxruntime | int8 |" in result.stdout


def test_feature_extraction_with_task_override(bert_dir, quick_profile, tmp_path):
    out = tmp_path / "fe"
    result = run(str(bert_dir), "--task", "feature-extraction", "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    report = check_bundle(out)
    assert report["task"] == "feature-extraction"
    assert "last_hidden_state" in report["targets"][0]["accuracy"]["per_output"]
    assert "top1_agreement" not in report["targets"][0]["accuracy"]
    assert result.stderr.count("[") == 0  # --quiet: no progress lines


def test_vision_cnn_requires_shape(cnn_onnx, tmp_path):
    result = run(str(cnn_onnx), "-o", str(tmp_path / "x"))
    assert_usage_error(result, "--shape", "input", "dim 0 (batch)", "dim 2 (height)", "dim 3 (width)")
    assert not (tmp_path / "x").exists()


def test_vision_cnn_with_shape_both_targets(cnn_onnx, quick_profile, tmp_path):
    out = tmp_path / "cnn"
    result = run(str(cnn_onnx), "--shape", "input=1,3,40,56", "-t", "cpu", "-t", "intel-cpu", "-p", str(quick_profile), "-o", str(out))
    assert result.exit_code == 0, result.output
    report = check_bundle(out)
    assert report["original"]["runtime"] == "onnxruntime"
    assert report["data"]["synthetic"] is True
    assert "SYNTHETIC" in (out / "report.md").read_text() or "synthetic" in (out / "report.md").read_text()
    model = onnx.load(str(out / "cpu/model.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 40, 56]
    import openvino as ov

    ir = ov.Core().read_model(str(out / "intel-cpu/model.xml"))
    assert list(ir.inputs[0].get_partial_shape().to_shape()) == [1, 3, 40, 56]
    for t in report["targets"]:
        assert t["accuracy"]["cosine_min"] >= 0.95


def test_old_opset_is_upgraded_for_per_channel(cnn_onnx_opset11, quick_profile, tmp_path):
    out = tmp_path / "old"
    result = run(str(cnn_onnx_opset11), "--shape", "input=1,3,32,32", "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    report = check_bundle(out)
    assert any("opset 11 converted to 13" in n for n in report["targets"][0]["notes"])
    assert "per-channel" in report["targets"][0]["quantization"]["weights"]


def test_image_classifier_with_image_folder(vit_dir, image_dir, quick_profile, tmp_path):
    out = tmp_path / "vit"
    result = run(str(vit_dir), "--data", str(image_dir), "-t", "cpu", "-t", "intel-cpu", "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code in (0, 1), result.output
    report = check_bundle(out)
    assert report["task"] == "image-classification"
    assert report["data"]["synthetic"] is False
    assert report["data"]["eval_samples"] + report["data"]["calibration_samples"] == 12
    assert (out / "cpu" / "preprocessor_config.json").is_file()
    for t in report["targets"]:
        assert "top1_agreement" in t["accuracy"]


def test_npz_data_for_onnx_model(cnn_onnx, quick_profile, tmp_path):
    rng = np.random.default_rng(1)
    npz = tmp_path / "samples.npz"
    np.savez(npz, input=rng.random((10, 1, 3, 32, 32), dtype=np.float32))
    out = tmp_path / "npz"
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "--data", str(npz), "-p", str(quick_profile), "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    report = check_bundle(out)
    assert report["data"]["synthetic"] is False
    assert report["data"]["eval_samples"] + report["data"]["calibration_samples"] == 10


def test_missed_budget_exits_1_and_writes_bundle(cnn_onnx, tmp_path):
    profile = tmp_path / "strict.toml"
    profile.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.5\nmax_latency_ms = 0.000001\n'
                       "[data]\ncalibration_samples = 4\neval_samples = 4\n[benchmark]\nmin_runs = 5\nmin_seconds = 0.1\n")
    out = tmp_path / "strict"
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-p", str(profile), "-o", str(out), "-q")
    assert result.exit_code == 1, result.output
    assert "budget missed: cpu (max_latency_ms)" in result.stderr
    report = check_bundle(out)
    assert report["verdict"] == "fail"
    checks = {c["budget"]: c for c in report["targets"][0]["budgets"]}
    assert checks["max_latency_ms"]["passed"] is False and checks["min_cosine"]["passed"] is True


def test_failed_compile_keeps_previous_bundle(cnn_onnx, quick_profile, tmp_path):
    out = tmp_path / "keep"
    assert run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-p", str(quick_profile), "-o", str(out), "-q").exit_code == 0
    before = (out / "manifest.json").read_text()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    result = run(str(bad), "-o", str(out))
    assert result.exit_code == 2
    assert (out / "manifest.json").read_text() == before
    assert not list(tmp_path.glob(".keep.*"))


def test_interrupted_compile_leaves_nothing(cnn_onnx, quick_profile, tmp_path):
    import edgekit
    from edgekit.progress import NullProgress

    class Interrupt(NullProgress):
        def stage(self, text: str) -> None:
            if "verify" in text:
                raise KeyboardInterrupt

    out = tmp_path / "never"
    with pytest.raises(KeyboardInterrupt):
        edgekit.compile(str(cnn_onnx), shapes=["input=1,3,32,32"], profile=str(quick_profile), output=out, progress=Interrupt())
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [quick_profile]


def test_python_api_is_deterministic(cnn_onnx, quick_profile, tmp_path):
    import edgekit

    # the cache off: else the second build copies the first one's artifacts and identity holds by construction
    first = edgekit.compile(str(cnn_onnx), shapes={"input": (1, 3, 32, 32)}, profile=str(quick_profile), output=tmp_path / "a",
                            cache=False)
    second = edgekit.compile(str(cnn_onnx), shapes={"input": (1, 3, 32, 32)}, profile=str(quick_profile), output=tmp_path / "b",
                             cache=False)
    assert first.passed and second.passed
    assert first.targets[0].accuracy.to_dict() == second.targets[0].accuracy.to_dict()
    assert sha256_file(tmp_path / "a/cpu/model.onnx") == sha256_file(tmp_path / "b/cpu/model.onnx")


# ------------------------------------------------------------------ bad input: exit 2, one line

def test_missing_model_path(tmp_path):
    assert_usage_error(run(str(tmp_path / "nope.onnx")), "model file not found")
    assert_usage_error(run(str(tmp_path / "nope")), "model not found")


def test_corrupt_onnx(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"this is not a protobuf at all \xff\xfe" * 20)
    assert_usage_error(run(str(bad)), "corrupt.onnx", "not a readable ONNX model")


def test_truncated_onnx(cnn_onnx, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(cnn_onnx.read_bytes()[: cnn_onnx.stat().st_size // 2])
    assert_usage_error(run(str(cut), "--shape", "input=1,3,32,32"), "cut.onnx")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_usage_error(run(str(tmp_path / "empty")), "no config.json")


def test_unknown_target_lists_known(cnn_onnx):
    assert_usage_error(run(str(cnn_onnx), "--target", "tpu"), "unknown target 'tpu'", "cpu", "intel-cpu")


def test_unknown_profile_lists_known(cnn_onnx):
    assert_usage_error(run(str(cnn_onnx), "--profile", "turbo"), "unknown profile 'turbo'", "balanced", "accurate", "fast")


def test_malformed_toml(cnn_onnx, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('runtime = "onnxruntime\n')
    assert_usage_error(run(str(cnn_onnx), "--target", str(bad)), "malformed TOML")


def test_unknown_toml_key_is_named(cnn_onnx, tmp_path):
    target = tmp_path / "mine.toml"
    target.write_text('runtime = "onnxruntime"\ndevice = "CPU"\ngraph_fusion = true\n')
    assert_usage_error(run(str(cnn_onnx), "--target", str(target)), "unknown key 'graph_fusion'", "graph_fusions")
    profile = tmp_path / "p.toml"
    profile.write_text('precision = "int8"\n[budgets]\nmin_cosin = 0.9\n')
    assert_usage_error(run(str(cnn_onnx), "--profile", str(profile)), "budgets.min_cosin", "min_cosine")


def test_bad_shape_option(cnn_onnx):
    assert_usage_error(run(str(cnn_onnx), "--shape", "input:1,3"), "NAME=D1,D2")
    assert_usage_error(run(str(cnn_onnx), "--shape", "pixels=1,3,32,32"), "no input 'pixels'")
    assert_usage_error(run(str(cnn_onnx), "--shape", "input=1,3,32"), "rank 4")


def test_missing_data(cnn_onnx, tmp_path):
    assert_usage_error(run(str(cnn_onnx), "--data", str(tmp_path / "none.txt")), "--data")


def test_unknown_task(bert_dir):
    assert_usage_error(run(str(bert_dir), "--task", "translation-ish"), "unknown task")


def test_output_that_is_not_a_bundle_is_refused(cnn_onnx, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    assert_usage_error(run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-o", str(mine)), "not an edgekit bundle")
    assert (mine / "thesis.txt").read_text() == "precious"


def test_internal_failure_exits_3(cnn_onnx, tmp_path, monkeypatch):
    from edgekit.stages import quantize_ort

    def boom(*args, **kwargs):
        raise RuntimeError("simulated runtime crash")

    monkeypatch.setattr(quantize_ort, "_qdq_settings", boom)
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-o", str(tmp_path / "o"), "-q")
    assert result.exit_code == 3
    assert "internal error: RuntimeError: simulated runtime crash" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_console_script_debug_shows_traceback(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"junk" * 10)
    plain = subprocess.run([sys.executable, "-m", "edgekit.cli", "compile", str(bad)], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run([sys.executable, "-m", "edgekit.cli", "compile", str(bad), "--debug"], capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_targets_and_profiles_commands():
    runner = CliRunner()
    targets = runner.invoke(main, ["targets"])
    assert targets.exit_code == 0 and "cpu" in targets.output and "intel-cpu" in targets.output
    profiles = runner.invoke(main, ["profiles"])
    assert profiles.exit_code == 0 and all(p in profiles.output for p in ("balanced", "accurate", "fast"))


# ------------------------------------------------------------------ the real model

@pytest.mark.slow
def test_embedded_default_minilm_both_targets(tmp_path):
    """`edgekit compile` with no MODEL: the real all-MiniLM-L6-v2, offline, meets the balanced budget."""
    out = tmp_path / "minilm"
    result = run("--target", "cpu", "--target", "intel-cpu", "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    report = check_bundle(out)
    assert report["source"]["location"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert report["source"]["weights_sha256"]["model.safetensors"]
    # the built-in corpus: 160 paragraphs, 64 calibrate, the other 96 are evaluated
    assert report["data"]["eval_samples"] == 96 and report["data"]["calibration_samples"] == 64
    for t in report["targets"]:
        assert t["accuracy"]["cosine_min"] >= 0.98, t
        assert set(t["accuracy"]["per_output"]) == {"token_embeddings", "sentence_embedding"}
        assert t["verdict"] == "pass"


def test_hub_id_offline_is_a_clear_usage_error():
    assert_usage_error(run("some-owner/some-model-that-is-not-here"), "cannot fetch 'some-owner/some-model-that-is-not-here'", "offline")


def test_a_verdict_on_synthetic_inputs_is_provisional_everywhere(tmp_path, quick_profile):
    """No --data: the verdict itself says provisional (report.md, report.json, stderr, JUnit); real data makes it final.
    The integer input indexes a 257-row table, so its synthetic values stay in [0, 257)."""
    import models

    path = models.byte_classifier_onnx(tmp_path / "bytes.onnx")
    out, junit = tmp_path / "synthetic", tmp_path / "junit.xml"
    result = run(str(path), "-t", "cpu", "--profile", str(quick_profile), "-o", str(out), "--no-bench", "-q",
                 "--junit", str(junit))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass" and "synthetic inputs" in report["provisional"]
    assert "verdict: **PASS** (**provisional**: reached on synthetic inputs" in (out / "report.md").read_text()
    assert "verdict pass is provisional: reached on synthetic inputs" in result.stderr
    assert 'name="provisional"' in junit.read_text()
    assert "synthetic 'bytes' values lie in [0, 257)" in (out / "report.md").read_text()

    rng = np.random.default_rng(1)
    data = tmp_path / "bytes.npz"
    np.savez(data, bytes=rng.integers(0, 257, size=(24, 1, 16)).astype(np.int32))
    real = run(str(path), "-t", "cpu", "--profile", str(quick_profile), "-o", str(tmp_path / "real"), "--no-bench",
               "-q", "--data", str(data))
    assert real.exit_code == 0, real.output
    assert json.loads((tmp_path / "real" / "report.json").read_text())["provisional"] == ""
    assert "provisional" not in real.stderr


def test_a_profile_can_refuse_provisional_verdicts(tmp_path, cnn_onnx, quick_profile):
    strict = tmp_path / "strict.toml"
    strict.write_text(quick_profile.read_text().replace("[data]\n", "[data]\nrequire_real_data = true\n"))
    out = tmp_path / "o"
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-t", "cpu", "-p", str(strict), "-o", str(out), "-q")
    assert_usage_error(result, "requires real data (require_real_data)", "give --data")
    assert not out.exists()
