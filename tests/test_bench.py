"""`edgekit bench` and the throughput/cold-start figures of the shared harness."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import main


def bench(*args):
    return CliRunner().invoke(main, ["bench", *args, "--duration", "0.2", "-q"], catch_exceptions=False)


def test_bench_bundle_against_original(cnn_bundle, tmp_path):
    out = tmp_path / "bench.json"
    result = bench(str(cnn_bundle), "--original", "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    names = [r["name"] for r in data["results"]]
    assert names == ["original", "cpu", "intel-cpu"]
    for r in data["results"]:
        lat = r["latency_ms"]
        assert r["latency_runs"] >= 50
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["first_inference_ms"] > 0 and r["load_ms"] > 0 and r["memory_mb"] >= 0
        assert r["speedup_p50"] == pytest.approx(data["results"][0]["latency_ms"]["p50"] / lat["p50"])
        assert r["settings"]["runtime"] in ("onnxruntime", "openvino")
    assert data["interleaved"] is True and data["threads"] >= 1
    assert "| intel-cpu | openvino |" in result.stdout


def test_bench_one_target_of_a_bundle(cnn_bundle):
    result = bench(str(cnn_bundle), "--target", "intel-cpu")
    assert result.exit_code == 0, result.output
    assert "| intel-cpu |" in result.stdout and "| cpu |" not in result.stdout


def test_bench_static_batch_says_why_no_throughput(cnn_bundle, tmp_path):
    out = tmp_path / "b.json"
    result = bench(str(cnn_bundle), "--batch", "1,4", "--json", str(out))
    assert result.exit_code == 0, result.output
    for r in json.loads(out.read_text())["results"]:
        assert r["throughput"]["1"]["per_second"] > 0
        assert r["throughput"]["4"]["per_second"] is None
        assert "batch 4 not runnable" in r["throughput"]["4"]["note"]


def test_bench_single_artifact_on_two_runtimes(cnn_onnx, tmp_path):
    out = tmp_path / "a.json"
    result = bench(str(cnn_onnx), "--target", "cpu", "--target", "intel-cpu", "--shape", "input=2,3,24,24", "--batch", "1,2",
                   "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["runtime"] for r in data["results"]] == ["onnxruntime", "openvino"]
    assert data["input"] == "input [2, 3, 24, 24]"
    for r in data["results"]:
        assert r["throughput"]["2"]["per_second"] > 0  # dynamic batch: a batch of 2 runs


def test_bench_model_exported_on_the_fly_with_batches(bert_dir, tmp_path):
    out = tmp_path / "m.json"
    result = bench(str(bert_dir), "--original", "--batch", "1,4", "--sequence-length", "16", "--json", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["results"]] == ["original", "fp32 on onnxruntime"]
    assert data["input"].startswith("input_ids [1, 16]")
    assert all(r["throughput"]["4"]["per_second"] > 0 for r in data["results"])


def test_compile_measures_throughput_at_profile_batches(bert_dir, tmp_path):
    profile = tmp_path / "batches.toml"
    profile.write_text('precision = "int8"\nfp32_candidate = false\n[budgets]\nmin_cosine = 0.9\n[data]\ncalibration_samples = 8\neval_samples = 4\n'
                       "[benchmark]\nsequence_length = 16\nmin_runs = 10\nmin_seconds = 0.2\nmax_seconds = 5.0\nbatch_sizes = [1, 4]\n")
    report = edgekit.compile(str(bert_dir), profile=str(profile), output=tmp_path / "out")
    data = json.loads((tmp_path / "out/report.json").read_text())
    t = data["targets"][0]
    assert t["throughput"]["4"]["per_second"] > 0 and t["throughput"]["1"]["per_second"] > 0
    assert data["original"]["throughput"]["4"]["per_second"] > 0
    assert data["original"]["first_inference_ms"] is None  # the original ran before it could be timed cold
    assert t["first_inference_ms"] > 0 and t["memory_mb"] >= 0
    assert "## Throughput (samples per second)" in (tmp_path / "out/report.md").read_text()
    assert report.passed


def test_bench_bad_input(cnn_bundle, tmp_path):
    for args, fragment in [
        ((str(tmp_path / "missing.onnx"),), "no such artifact"),
        ((str(cnn_bundle), "--target", "cuda"), "has no target cuda"),
        ((str(cnn_bundle / "intel-cpu" / "model.xml"), "--target", "cpu"), "openvino targets only"),
        ((str(tmp_path / "nothing-here"),), "model not found"),
    ]:
        result = bench(*args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr and "Traceback" not in result.output
    bad = CliRunner().invoke(main, ["bench", str(cnn_bundle), "--batch", "1,x"])
    assert bad.exit_code == 2 and "batch sizes" in bad.output
