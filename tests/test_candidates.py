"""Slower than the original is not a pass: an INT8 artifact that is not clearly faster competes with the target's
FP32-optimised artifact, timed side by side; the fastest that meets the accuracy budgets ships."""

from __future__ import annotations

import json

import models
from click.testing import CliRunner

from edgekit.cli import main


def test_int8_that_is_not_faster_competes_with_fp32(tmp_path):
    # A small MLP: ONNX Runtime's quantise/dequantise overhead outweighs its two tiny MatMuls, so INT8 is not
    # clearly faster than the original (the same graph in FP32 on ONNX Runtime).
    model = models.mlp_classifier_onnx(tmp_path / "mlp.onnx")
    data = models.labelled_npz(tmp_path / "mlp.npz", model, 40)
    profile = tmp_path / "p.toml"
    profile.write_text('precision = "int8"\n[budgets]\nmin_cosine = 0.5\nmin_speedup = 1.0\n'
                       "[data]\ncalibration_samples = 16\neval_samples = 8\n"
                       "[benchmark]\nmin_runs = 50\nmin_seconds = 0.3\nmax_seconds = 3.0\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(model), "--data", str(data), "-t", "cpu", "-p", str(profile),
                                       "-o", str(out), "-q"])
    assert result.exit_code in (0, 1), result.output
    (cpu,) = json.loads((out / "report.json").read_text())["targets"]
    candidates = cpu["candidates"]
    assert [c["precision"] for c in candidates] == ["int8", "fp32"]
    (shipped,) = [c for c in candidates if c["shipped"]]
    assert cpu["precision"] == shipped["precision"]
    int8, fp32 = candidates
    # FP32 replaces INT8 only when it meets the budgets and is clearly (10%) faster, or INT8 misses a budget
    fp32_wins = fp32["budgets_met"] and (not int8["budgets_met"] or fp32["p50_ms"] * 1.1 < int8["p50_ms"])
    assert shipped is (fp32 if fp32_wins else int8)
    assert cpu["latency_ms"]["p50"] == shipped["p50_ms"]  # the report's figures are the side-by-side run's
    assert any(n.startswith("candidates: INT8 at") for n in cpu["notes"])
    speedup = next(c for c in cpu["budgets"] if c["budget"] == "min_speedup")
    assert speedup["measured"] == cpu["speedup_p50"]
    # the bundle is whole: the shipped artifact sits in the target's folder and verifies
    assert not (out / "candidates").exists() and sorted(p.name for p in out.iterdir()) == [
        "cpu", "manifest.json", "report.json", "report.md"]
    runtime = json.loads((out / "cpu" / "runtime.json").read_text())
    assert runtime["target"] == "cpu" and (out / "cpu" / runtime["artifact"]).is_file()
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 0, verify.output


def test_a_profile_can_keep_int8_whatever_its_speed(tmp_path, quick_profile):
    """fp32_candidate = false (the quick test profile): no candidate is built, INT8 ships."""
    model = models.mlp_classifier_onnx(tmp_path / "mlp.onnx")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(model), "-t", "cpu", "-p", str(quick_profile), "-o", str(out), "-q"])
    assert result.exit_code in (0, 1), result.output
    (cpu,) = json.loads((out / "report.json").read_text())["targets"]
    assert cpu["precision"] == "int8" and "candidates" not in cpu


def test_the_float_precision_of_unquantised_layers_is_chosen_by_measurement(tmp_path, cnn_onnx):
    """bf16 for the layers left in float is measured against f32 on the model itself; the one that ships is in
    runtime.json, and the judged figure is that one's."""
    import re

    profile = tmp_path / "bf16.toml"
    profile.write_text('precision = "int8"\nfp32_candidate = false\nfloat_precision = "bf16"\n[budgets]\nmin_cosine = 0.5\n'
                       "[data]\ncalibration_samples = 8\neval_samples = 8\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(cnn_onnx), "--shape", "input=1,3,32,32", "-t", "intel-cpu",
                                       "-p", str(profile), "-o", str(out), "-q", "--no-bench"])
    assert result.exit_code == 0, result.output
    (target,) = json.loads((out / "report.json").read_text())["targets"]
    (note,) = [n for n in target["notes"] if n.startswith("layers left in float:")]
    found = re.match(r"layers left in float: bf16 gives cosine_min ([\d.]+), f32 ([\d.]+); (\w+) ships", note)
    assert found, note
    bf16, f32, shipped = float(found[1]), float(found[2]), found[3]
    assert shipped == ("f32" if f32 - bf16 > 0.002 else "bf16")
    runtime = json.loads((out / "intel-cpu" / "runtime.json").read_text())
    assert runtime["INFERENCE_PRECISION_HINT"] == shipped
    assert round(target["accuracy"]["cosine_min"], 4) == (f32 if shipped == "f32" else bf16)
