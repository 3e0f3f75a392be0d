"""One target's failure never takes the others down (issue 19): the bundle holds every target that built, the
failed one has its row with its error, and the exit code is the worst one."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import main
from edgekit.errors import InternalError
from edgekit.report import Report
from edgekit.verify_bundle import verify


@pytest.fixture
def nncf_fails(monkeypatch):
    import nncf

    def broken(*args, **kwargs):
        raise RuntimeError("Could not find a node /model/decoder/Gather_3 in NNCFGraph!")

    monkeypatch.setattr(nncf, "quantize", broken)


def test_the_others_are_kept_when_one_quantiser_fails(cnn_onnx, quick_profile, tmp_path, nncf_fails):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(cnn_onnx), "-t", "cpu", "-t", "intel-cpu", "--shape",
                                       "input=1,3,32,32", "-p", str(quick_profile), "--no-bench", "-o", str(out),
                                       "--junit", str(tmp_path / "j.xml"), "--progress", "none"])
    assert result.exit_code == 3, result.output  # the worst outcome: an internal failure of one target
    assert "not built: intel-cpu: NNCF quantisation failed" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [t["target"] for t in report["targets"]] == ["cpu"] and report["verdict"] == "fail"
    (failed,) = report["failed"]
    assert failed["target"] == "intel-cpu" and failed["exit_code"] == 3 and "Gather_3" in failed["error"]
    assert not (out / "intel-cpu").exists()
    assert verify(out).ok  # the bundle holds what it lists: cpu
    assert json.loads((out / "manifest.json").read_text())["targets"] == ["cpu"]
    assert "## Targets that failed to build" in (out / "report.md").read_text()
    assert Report.from_dict(report).failed[0].error == failed["error"]
    suites = {s.get("name"): s for s in ET.parse(tmp_path / "j.xml").getroot()}
    assert suites["edgekit.intel-cpu"].find("testcase/error") is not None


def test_when_every_target_fails_the_error_is_raised_and_nothing_written(cnn_onnx, quick_profile, tmp_path, nncf_fails):
    with pytest.raises(InternalError, match="NNCF quantisation failed"):
        edgekit.compile(str(cnn_onnx), targets=["intel-cpu"], shapes=["input=1,3,32,32"], profile=str(quick_profile),
                        output=tmp_path / "out", no_bench=True)
    assert not (tmp_path / "out").exists()


def test_a_node_nncf_cannot_quantise_is_left_in_float_and_named(cnn_onnx, quick_profile, tmp_path, monkeypatch):
    import nncf

    real, calls = nncf.quantize, []

    def picky(model, **kwargs):
        calls.append(kwargs.get("ignored_scope"))
        first_conv = next(op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")
        scope = kwargs.get("ignored_scope")
        if scope is None or first_conv not in scope.names:
            raise RuntimeError(f"Could not find a node {first_conv} in NNCFGraph!")
        return real(model, **kwargs)

    monkeypatch.setattr(nncf, "quantize", picky)
    report = edgekit.compile(str(cnn_onnx), targets=["intel-cpu"], shapes=["input=1,3,32,32"], profile=str(quick_profile),
                             output=tmp_path / "out", no_bench=True)
    (target,) = report.targets
    assert len(calls) == 2 and not report.failed
    assert "in NNCFGraph" in target.quantization["left_in_float"]
    assert any("NNCF could not quantise 1 node(s); left in float" in n for n in target.notes)


def test_nncf_failing_without_naming_a_node_is_not_retried(cnn_onnx, quick_profile, tmp_path, monkeypatch):
    import nncf

    calls = []

    def broken(model, **kwargs):
        calls.append(1)
        raise RuntimeError("something else broke")

    monkeypatch.setattr(nncf, "quantize", broken)
    with pytest.raises(InternalError, match="NNCF quantisation failed: something else broke"):
        edgekit.compile(str(cnn_onnx), targets=["intel-cpu"], shapes=["input=1,3,32,32"], profile=str(quick_profile),
                        output=tmp_path / "out", no_bench=True)
    assert calls == [1]


def test_an_int32_embedding_classifier_builds_for_both_targets_with_biases_left_fp32(tmp_path, quick_profile):
    """Issue 19: a published file-type classifier's shape crashed ONNX Runtime's quantiser (exit 3)."""
    from models import int32_embedding_classifier

    model = int32_embedding_classifier(tmp_path / "bytes.onnx")
    report = edgekit.compile(str(model), targets=["cpu", "intel-cpu"], profile=str(quick_profile),
                             output=tmp_path / "out", no_bench=True)
    assert not report.failed and [t.target for t in report.targets] == ["cpu", "intel-cpu"]
    cpu = report.targets[0]
    assert cpu.quantization["biases"] == "fp32" and cpu.precision == "int8"
    assert any("biases kept FP32 (the quantiser failed with them INT32: The truth value" in n for n in cpu.notes)
    assert any("[0, 257)" in n for n in report.notes)  # synthetic ids stay inside the table
    assert verify(tmp_path / "out").ok
