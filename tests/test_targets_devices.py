"""Device targets: availability probing, `edgekit targets --json`, compiling without the device (the
`unmeasured` verdict, --require-measured), the device-present path with the runtime's device list
faked, the review of such bundles, and the real all-MiniLM-L6-v2 for intel-npu, cuda and intel-gpu.

Hardware that is present is never faked; a device list is faked only where the device is absent.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgekit import devices, runtimes
from edgekit.cli import main
from edgekit.config import Budgets, load_target, list_targets
from edgekit.devices import Availability, RuntimeDevices, availability
from edgekit.judge import judge, verdict
from edgekit.stages.fp16 import float_initializer_types
from edgekit.stages.openvino_device import ir_element_types

BUILTIN = ["cpu", "cuda", "intel-cpu", "intel-gpu", "intel-npu"]


def run(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


def ov_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


# ---------------------------------------------------------------- availability


def test_onnxruntime_availability_from_a_device_list():
    cuda = load_target("cuda")
    with_gpu = RuntimeDevices("onnxruntime", "1.31.1", ("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert availability(cuda, with_gpu) == Availability(True)
    cpu_only = RuntimeDevices("onnxruntime", "1.32.0", ("CPUExecutionProvider",))
    absent = availability(cuda, cpu_only)
    assert not absent.present
    assert absent.reason.startswith("onnxruntime 1.32.0 has no CUDAExecutionProvider here (providers: CPUExecutionProvider)")
    assert "pip install edgekit[gpu]" in absent.reason
    listed_unusable = RuntimeDevices("onnxruntime", "1.31.1", ("CPUExecutionProvider",),
                                     {"CUDAExecutionProvider": "libcudnn.so.9: cannot open shared object file"})
    assert availability(cuda, listed_unusable).reason == \
        "onnxruntime 1.31.1 cannot use CUDAExecutionProvider here: libcudnn.so.9: cannot open shared object file"


def test_openvino_availability_from_a_device_list():
    npu, gpu = load_target("intel-npu"), load_target("intel-gpu")
    found = RuntimeDevices("openvino", "2026.4.1", ("CPU", "GPU.0", "GPU.1"), {"NPU": "its NPU plugin finds no device"})
    assert availability(gpu, found).present  # GPU.0 counts as a GPU
    assert availability(npu, found).reason == \
        "OpenVINO 2026.4.1 sees no NPU here (devices: CPU, GPU.0, GPU.1): its NPU plugin finds no device"
    assert availability(npu, RuntimeDevices("openvino", "2026.4.1", ("CPU", "NPU"))).present


def test_real_probe_is_honest_about_this_machine():
    """No faking: whatever the runtimes here report."""
    import onnxruntime as ort

    found = devices.probe_all(list_targets())
    assert found["cpu"].present and found["intel-cpu"].present
    assert found["cuda"].present == ("CUDAExecutionProvider" in devices.probe("onnxruntime").devices)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "has no CUDAExecutionProvider" in found["cuda"].reason
    for name, device in (("intel-gpu", "GPU"), ("intel-npu", "NPU")):
        present = any(d.split(".")[0] == device for d in ov_devices())
        assert found[name].present == present
        if not present:
            assert found[name].reason.startswith("OpenVINO ") and f"sees no {device} here (devices: " in found[name].reason


# ---------------------------------------------------------------- edgekit targets


def test_targets_json_lists_every_target_with_availability():
    result = CliRunner().invoke(main, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["targets"]}
    assert sorted(rows) == BUILTIN
    assert rows["cpu"]["precision"] is None and rows["cpu"]["precision_from"] == "profile"
    assert (rows["cuda"]["runtime"], rows["cuda"]["execution_provider"], rows["cuda"]["precision"]) == \
        ("onnxruntime", "CUDAExecutionProvider", "fp16")
    assert (rows["intel-gpu"]["device"], rows["intel-gpu"]["precision"]) == ("GPU", "fp16")
    assert (rows["intel-npu"]["device"], rows["intel-npu"]["precision"], rows["intel-npu"]["static_shapes"]) == ("NPU", "int8", True)
    for row in rows.values():
        assert isinstance(row["present"], bool)
        assert (row["reason"] is None) == row["present"]
    assert rows["cpu"]["present"] and rows["intel-cpu"]["present"]


def test_targets_table_says_why_not(monkeypatch):
    if "NPU" in ov_devices():
        pytest.skip("an NPU is present: nothing to fake")
    openvino = runtimes.get("openvino")
    real = openvino.probe()
    monkeypatch.setattr(openvino, "probe", lambda: RuntimeDevices("openvino", real.version, real.devices + ("NPU",)))
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["targets", "--json"]).output)["targets"]}
    assert rows["intel-npu"]["present"] is True
    monkeypatch.undo()
    text = CliRunner().invoke(main, ["targets"]).output
    npu_line = next(line for line in text.splitlines() if line.startswith("intel-npu"))
    assert " no " in npu_line and "sees no NPU here" in npu_line


# ---------------------------------------------------------------- the verdict without latency


def test_judge_latency_budget_on_unmeasured_target_is_not_checked():
    budgets = Budgets(min_cosine=0.9, max_latency_ms=5.0)
    checks = judge(budgets, 0.99, None, None, 1000, not_measured="OpenVINO sees no NPU here")
    latency = next(c for c in checks if c.budget == "max_latency_ms")
    assert (latency.applicable, latency.not_checked, latency.passed) == (False, True, None)
    assert latency.to_dict()["not_checked"] is True and "OpenVINO sees no NPU here" in latency.reason
    assert verdict(checks) == "pass"
    strict = judge(budgets, 0.99, None, None, 1000, not_measured="OpenVINO sees no NPU here", require_measured=True)
    assert verdict(strict) == "fail"
    assert [c.budget for c in strict if c.passed is False] == ["require_measured"]
    # Measured: no extra check, the latency budget decides.
    measured = judge(budgets, 0.99, None, 6.0, 1000, require_measured=True)
    assert verdict(measured) == "fail" and [c.budget for c in measured] == ["min_cosine", "max_latency_ms"]


def test_compile_without_devices_unmeasured_list_and_require_measured(bert_dir, quick_profile, tmp_path):
    out = tmp_path / "devices"
    args = [str(bert_dir), "--target", "intel-npu", "--target", "cuda", "--target", "intel-gpu", "--target", "cpu",
            "--profile", str(quick_profile), "--max-latency-ms", "1000", "--junit", str(tmp_path / "e.xml")]
    result = run(*args, "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_name = {t["target"]: t for t in report["targets"]}
    absent = [n for n in ("intel-npu", "cuda", "intel-gpu") if not devices.probe_all([load_target(n)])[n].present]
    assert [u["target"] for u in report["unmeasured"]] == absent
    assert report["verdict"] == "pass"
    for name in absent:
        t = by_name[name]
        assert t["latency_measured"] is False and t["latency_ms"] is None and t["latency_not_measured"]
        assert t["latency_samples_ms"] == [] and t["speedup_p50"] is None
        assert t["verified_on"].endswith(" CPU") and t["accuracy"]["cosine_min"] >= 0.99
        check = next(c for c in t["budgets"] if c["budget"] == "max_latency_ms")
        assert check["not_checked"] is True and check["passed"] is None
        runtime = json.loads((out / name / "runtime.json").read_text())
        assert runtime["device"] == load_target(name).device and runtime["measured"] is False
        assert runtime["verified_with"]["device" if name != "cuda" else "execution_provider"] in ("CPU", "CPUExecutionProvider")
        assert f"not measured: {name}: " in result.stderr
    # The benchmark skipped them: only the original and cpu were timed, interleaved.
    assert by_name["cpu"]["latency_measured"] is True and by_name["cpu"]["latency_runs"] >= 10
    assert report["original"]["latency_runs"] >= 10
    assert "| intel-npu | openvino | int8 |" in result.stdout and "not measured" in result.stdout
    assert "**not checked**" in (out / "report.md").read_text()
    assert 'message="not checked: latency not measured' in (tmp_path / "e.xml").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precompiled"]["intel-npu"]["written"] is False
    # CUDA: FP16 weights, FP32 inputs (int64 ids) and outputs.
    cuda = onnx.load(str(out / "cuda/model.onnx"))
    types = float_initializer_types(cuda)
    assert types["FLOAT16"] > 10 * types.get("FLOAT", 0)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in cuda.graph.output)
    assert ir_element_types(out / "intel-gpu/model.xml")["f16"] > 0
    # The review shows them as not measured, in every format.
    review = CliRunner().invoke(main, ["report", str(out)])
    assert review.exit_code == 0, review.output
    assert "| not measured | not measured | not measured |" in review.output
    html = CliRunner().invoke(main, ["report", str(out), "-f", "html"])
    assert html.exit_code == 0 and "latency not measured" in html.output
    assert CliRunner().invoke(main, ["report", str(out), "--baseline", str(out)]).exit_code == 0

    if not absent:
        return
    strict = run(*args, "--require-measured", "-o", str(tmp_path / "strict"))
    assert strict.exit_code == 1, strict.output
    assert "budget missed" in strict.stderr and "require_measured" in strict.stderr
    strict_report = json.loads((tmp_path / "strict/report.json").read_text())
    assert strict_report["verdict"] == "fail"
    assert {t["target"] for t in strict_report["targets"] if t["verdict"] == "fail"} == set(absent)


# ---------------------------------------------------------------- an NPU, with OpenVINO's device list faked


@pytest.fixture
def fake_npu(monkeypatch):
    """OpenVINO with an 'NPU' in its device list, compiled by the CPU plugin: the device-present code path
    (compile on the device, time it, export the blob, read the driver version) runs for real on a stand-in."""
    import openvino as ov

    if "NPU" in ov_devices():
        pytest.skip("an NPU is present: the real one is used, nothing to fake")

    class FakeNpuCore(ov.Core):
        @property
        def available_devices(self):
            return list(super().available_devices) + ["NPU"]

        def compile_model(self, model, device_name=None, config=None):
            if device_name == "NPU":
                device_name, config = "CPU", {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
            return super().compile_model(model, device_name, config or {})

        def get_property(self, device, name, *args):
            if device == "NPU":
                return {"NPU_DRIVER_VERSION": "1.2.3-fake", "NPU_COMPILER_VERSION": "7.0-fake",
                        "FULL_DEVICE_NAME": "Fake NPU"}[name]
            return super().get_property(device, name, *args)

    monkeypatch.setattr(ov, "Core", FakeNpuCore)


def test_npu_present_is_measured_and_writes_the_blob(fake_npu, bert_dir, quick_profile, tmp_path):
    out = tmp_path / "npu"
    result = run(str(bert_dir), "--target", "intel-npu", "--profile", str(quick_profile), "--require-measured", "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    (npu,) = report["targets"]
    assert report["unmeasured"] == [] and npu["latency_measured"] is True
    assert npu["latency_ms"]["p50"] > 0 and npu["first_inference_ms"] > 0 and npu["load_ms"] > 0
    assert npu["verified_on"] == "openvino NPU"
    blob = npu["precompiled"]
    assert blob["written"] is True and blob["file"] == "intel-npu/model.blob" and blob["portable"] is False
    assert blob["npu_driver_version"] == "1.2.3-fake" and blob["npu_compiler_version"] == "7.0-fake"
    assert blob["openvino"] and "same OpenVINO and driver versions" in blob["note"]
    assert (out / "intel-npu/model.blob").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precompiled"]["intel-npu"]["npu_driver_version"] == "1.2.3-fake"
    assert "intel-npu/model.blob" in {f["path"] for f in manifest["files"]}
    assert json.loads((out / "intel-npu/runtime.json").read_text())["device"] == "NPU"
    assert "## Precompiled blobs" in (out / "report.md").read_text()


# ---------------------------------------------------------------- the real model, all three device targets


@pytest.mark.slow
def test_minilm_npu_cuda_intel_gpu_built_and_verified_without_devices(tmp_path):
    import openvino as ov

    out = tmp_path / "minilm"
    result = run("--target", "intel-npu", "--target", "cuda", "--target", "intel-gpu", "-q", "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_name = {t["target"]: t for t in report["targets"]}
    assert list(by_name) == ["intel-npu", "cuda", "intel-gpu"]
    for t in by_name.values():
        assert t["accuracy"]["cosine_min"] >= 0.99, (t["target"], t["accuracy"]["cosine_min"])
        assert t["verdict"] == "pass"
    found = devices.probe_all([load_target(n) for n in by_name])
    for name, here in found.items():
        if not here.present:
            assert by_name[name]["latency_measured"] is False
            assert by_name[name]["latency_not_measured"] == here.reason
            assert {"target": name, "reason": here.reason} in report["unmeasured"]
    # NPU: only static shapes, INT8 weights.
    model = ov.Core().read_model(str(out / "intel-npu/model.xml"))
    assert not model.is_dynamic()
    assert [list(p.get_partial_shape().to_shape()) for p in model.inputs] == [[1, 128], [1, 128]]
    types = ir_element_types(out / "intel-npu/model.xml")
    assert types["i8"] > 20e6 and types["i8"] > 0.9 * sum(types.values())
    # CUDA: FP16 weights, FP32 inputs and outputs (the ids are int64).
    cuda = onnx.load(str(out / "cuda/model.onnx"))
    sizes = float_initializer_types(cuda)
    assert sizes["FLOAT16"] > 40e6 and sizes.get("FLOAT", 0) < 1e6
    assert [i.type.tensor_type.elem_type for i in cuda.graph.input] == [onnx.TensorProto.INT64] * 2
    assert [o.type.tensor_type.elem_type for o in cuda.graph.output] == [onnx.TensorProto.FLOAT] * 2
    assert np.isclose(by_name["cuda"]["size_bytes"] / 1e6, 45.3, atol=1.0)
