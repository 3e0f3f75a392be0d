"""Targets and profiles: built-ins, user files, and every way a TOML file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.config import Budgets, Profile, Target, list_profiles, list_targets, load_profile, load_target
from edgekit.errors import EdgekitError, UsageError

VALID_PROFILE = """\
description = "mine"
precision = "int8"

[budgets]
min_cosine = 0.9
"""


def write(tmp_path: Path, text: str, name: str = "mine.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- built-ins

def test_builtin_target_cpu():
    t = load_target("cpu")
    assert isinstance(t, Target)
    assert t.name == "cpu"
    assert t.runtime == "onnxruntime"
    assert t.device == "CPU"
    assert t.execution_provider == "CPUExecutionProvider"
    assert t.graph_fusions is True
    assert t.artifact_name == "model.onnx"
    assert t.description.startswith("ONNX Runtime")
    assert Path(t.source).name == "cpu.toml" and Path(t.source).is_file()


def test_builtin_target_intel_cpu():
    t = load_target("intel-cpu")
    assert t.name == "intel-cpu"
    assert t.runtime == "openvino"
    assert t.device == "CPU"
    assert t.performance_hint == "LATENCY"
    assert t.execution_provider == ""  # ONNX Runtime only: no default for OpenVINO
    assert t.graph_fusions is False
    assert t.artifact_name == "model.xml"
    assert "OpenVINO" in t.description


@pytest.mark.parametrize(
    "name, precision, activations, min_cosine, calibration_samples, top1, accuracy_drop, decision, iou",
    [
        ("balanced", "int8", "asymmetric", 0.98, 64, 0.98, 0.01, 0.95, 0.8),
        ("accurate", "fp32", "asymmetric", 0.999, 16, 0.995, 0.005, 0.99, 0.9),
        ("fast", "int8", "symmetric", 0.95, 32, 0.95, 0.03, 0.9, 0.7),
    ],
)
def test_builtin_profiles(name, precision, activations, min_cosine, calibration_samples, top1, accuracy_drop, decision,
                          iou):
    p = load_profile(name)
    assert isinstance(p, Profile)
    assert p.name == name
    assert p.precision == precision
    assert p.activations == activations
    assert p.per_channel is True
    assert p.calibration_method == "minmax"
    assert p.budgets == Budgets(min_cosine=min_cosine, min_top1_agreement=top1, max_latency_ms=None, max_size_mb=None,
                                max_drop={"accuracy": accuracy_drop, "word_accuracy": {"fast": 0.05, "balanced": 0.02, "accurate": 0.01}[name],
                                          "map": {"fast": 0.05, "balanced": 0.02, "accurate": 0.01}[name]}, min_speedup=1.0 if name == "balanced" else None,
                                min_decision_agreement=decision, min_map_iou=iou,
                                min_box_agreement={"fast": 0.8, "balanced": 0.9, "accurate": 0.95}[name],
                                min_mask_miou={"fast": 0.8, "balanced": 0.9, "accurate": 0.95}[name],
                                min_depth_agreement={"fast": 0.8, "balanced": 0.9, "accurate": 0.95}[name],
                                min_token_agreement={"fast": 0.8, "balanced": 0.85, "accurate": 0.9}[name],
                                max_ppl_increase={"fast": 0.25, "balanced": 0.1, "accurate": 0.05}[name])
    assert isinstance(p.budgets.min_cosine, float)
    assert p.calibration_samples == calibration_samples
    assert p.eval_samples == 32
    assert p.seed == 0
    assert p.sequence_length == 128
    assert p.bench_min_runs == 50
    assert p.bench_min_seconds == 2.0 and isinstance(p.bench_min_seconds, float)
    assert p.bench_max_seconds == 20.0 and isinstance(p.bench_max_seconds, float)
    assert Path(p.source).name == f"{name}.toml"
    assert p.description


def test_list_targets_and_profiles():
    assert [t.name for t in list_targets()] == ["cpu", "cuda", "intel-cpu", "intel-gpu", "intel-npu"]
    assert [p.name for p in list_profiles()] == ["accurate", "balanced", "fast"]
    assert all(isinstance(t, Target) for t in list_targets())
    assert all(isinstance(p, Profile) for p in list_profiles())


# ---------------------------------------------------------------- user files

def test_user_profile_file(tmp_path):
    path = write(tmp_path, VALID_PROFILE + """
min_top1_agreement = 1
max_latency_ms = 5
max_size_mb = 12.5

[data]
calibration_samples = 8
eval_samples = 4
seed = 7

[benchmark]
sequence_length = 64
min_runs = 10
min_seconds = 1
max_seconds = 3
""")
    p = load_profile(path)
    assert p.name == "mine"
    assert p.source == path
    assert p.description == "mine"
    assert p.precision == "int8"
    assert p.activations == "asymmetric"  # default
    assert p.budgets == Budgets(min_cosine=0.9, min_top1_agreement=1.0, max_latency_ms=5.0, max_size_mb=12.5)
    # ints given for float fields come back as floats
    assert isinstance(p.budgets.min_top1_agreement, float)
    assert isinstance(p.budgets.max_latency_ms, float)
    assert (p.calibration_samples, p.eval_samples, p.seed) == (8, 4, 7)
    assert p.sequence_length == 64
    assert p.bench_min_runs == 10
    assert p.bench_min_seconds == 1.0 and isinstance(p.bench_min_seconds, float)
    assert p.bench_max_seconds == 3.0 and isinstance(p.bench_max_seconds, float)


def test_user_profile_defaults(tmp_path):
    p = load_profile(write(tmp_path, 'precision = "fp32"\n[budgets]\nmin_cosine = 0.5\n'))
    assert p.description == ""
    assert p.calibration_samples == 64 and p.eval_samples == 32 and p.seed == 0
    assert p.bench_min_runs == 50
    assert p.budgets.max_latency_ms is None


def test_user_target_file(tmp_path):
    path = write(tmp_path, 'runtime = "onnxruntime"\ndevice = "CPU"\n', name="edge.toml")
    t = load_target(path)
    assert t.name == "edge"
    assert t.source == path
    assert t.execution_provider == "CPUExecutionProvider"  # default for onnxruntime
    assert t.graph_fusions is False
    assert t.description == ""


def test_user_file_without_toml_suffix_but_with_folder(tmp_path):
    (tmp_path / "edge").write_text('runtime = "openvino"\ndevice = "GPU"\nperformance_hint = "THROUGHPUT"\n')
    t = load_target(str(tmp_path / "edge"))
    assert (t.runtime, t.device, t.performance_hint) == ("openvino", "GPU", "THROUGHPUT")


def test_user_file_missing(tmp_path):
    with pytest.raises(UsageError, match="profile file not found"):
        load_profile(str(tmp_path / "nope.toml"))


# ---------------------------------------------------------------- bad files

def test_unknown_top_level_key_suggests_nearest(tmp_path):
    path = write(tmp_path, VALID_PROFILE.replace('precision = "int8"', 'precision = "int8"\nper_chanel = true'))
    with pytest.raises(UsageError) as info:
        load_profile(path)
    msg = str(info.value)
    assert path in msg
    assert "'per_chanel'" in msg
    assert "did you mean 'per_channel'" in msg


def test_unknown_key_in_budgets_suggests_nearest(tmp_path):
    path = write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosin = 0.9\n')
    with pytest.raises(UsageError) as info:
        load_profile(path)
    msg = str(info.value)
    assert "'budgets.min_cosin'" in msg
    assert "did you mean 'min_cosine'" in msg


def test_unknown_key_top_level_min_cosin(tmp_path):
    # min_cosine belongs in [budgets]; no top-level key is close, so the valid top-level keys are listed
    path = write(tmp_path, 'precision = "int8"\nmin_cosin = 0.9\n[budgets]\nmin_cosine = 0.9\n')
    with pytest.raises(UsageError) as info:
        load_profile(path)
    msg = str(info.value)
    assert "unknown key 'min_cosin'" in msg
    assert "valid keys: activations, calibration_method, description, device_precision, float_precision, fp32_candidate, per_channel, precision" in msg


def test_unknown_target_key_suggests_nearest(tmp_path):
    path = write(tmp_path, 'runtime = "onnxruntime"\ndevice = "CPU"\ndevise = "GPU"\n')
    with pytest.raises(UsageError, match=r"unknown key 'devise'.*did you mean 'device'"):
        load_target(path)


def test_unknown_key_far_from_everything_lists_valid_keys(tmp_path):
    path = write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosine = 0.9\nzzzzzz = 1\n')
    with pytest.raises(UsageError) as info:
        load_profile(path)
    msg = str(info.value)
    assert "valid keys:" in msg
    for key in ("max_latency_ms", "max_size_mb", "min_cosine", "min_top1_agreement"):
        assert key in msg


def test_unknown_section(tmp_path):
    path = write(tmp_path, VALID_PROFILE + "[budget]\nmax_size_mb = 3\n")
    with pytest.raises(UsageError) as info:
        load_profile(path)
    msg = str(info.value)
    assert "unknown section '[budget]'" in msg
    assert "did you mean 'budgets'" in msg


def test_unknown_nested_table_rejected(tmp_path):
    path = write(tmp_path, VALID_PROFILE + "[budgets.extra]\nx = 1\n")
    with pytest.raises(UsageError, match=r"unknown key 'budgets.extra'"):
        load_profile(path)


def test_malformed_toml(tmp_path):
    path = write(tmp_path, 'precision = "int8\n[budgets\n')
    with pytest.raises(UsageError) as info:
        load_profile(path)
    assert "malformed TOML" in str(info.value)
    assert path in str(info.value)


def test_malformed_target_toml(tmp_path):
    path = write(tmp_path, "runtime = = onnxruntime\n")
    with pytest.raises(UsageError, match="malformed TOML"):
        load_target(path)


def test_string_for_float(tmp_path):
    path = write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosine = "0.9"\n')
    with pytest.raises(UsageError) as info:
        load_profile(path)
    msg = str(info.value)
    assert "'budgets.min_cosine' must be float or int" in msg
    assert "'0.9'" in msg


def test_int_for_bool(tmp_path):
    path = write(tmp_path, VALID_PROFILE.replace('precision = "int8"', 'precision = "int8"\nper_channel = 1'))
    with pytest.raises(UsageError, match=r"'per_channel' must be bool, not 1"):
        load_profile(path)


def test_bool_for_int(tmp_path):
    path = write(tmp_path, VALID_PROFILE + "[data]\nseed = true\n")
    with pytest.raises(UsageError, match=r"'data.seed' must be int, not True"):
        load_profile(path)


def test_float_for_int(tmp_path):
    path = write(tmp_path, VALID_PROFILE + "[benchmark]\nmin_runs = 2.5\n")
    with pytest.raises(UsageError, match=r"'benchmark.min_runs' must be int"):
        load_profile(path)


def test_bool_for_float(tmp_path):
    path = write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosine = true\n')
    with pytest.raises(UsageError, match=r"'budgets.min_cosine' must be float or int, not True"):
        load_profile(path)


@pytest.mark.parametrize(
    "section, line, key",
    [
        ("budgets", "min_cosine = 1.5", "budgets.min_cosine"),
        ("budgets", "min_cosine = -1.01", "budgets.min_cosine"),
        ("budgets", "min_top1_agreement = 1.2", "budgets.min_top1_agreement"),
        ("budgets", "max_latency_ms = -1", "budgets.max_latency_ms"),
        ("data", "calibration_samples = 0", "data.calibration_samples"),
        ("data", "seed = -1", "data.seed"),
        ("benchmark", "min_runs = 0", "benchmark.min_runs"),
        ("benchmark", "min_seconds = -0.5", "benchmark.min_seconds"),
    ],
)
def test_out_of_range(tmp_path, section, line, key):
    body = 'precision = "int8"\n'
    if section == "budgets":
        body += f"[budgets]\n{line}\n" + ("min_cosine = 0.9\n" if "min_cosine" not in line else "")
    else:
        body += f"[budgets]\nmin_cosine = 0.9\n[{section}]\n{line}\n"
    path = write(tmp_path, body)
    with pytest.raises(UsageError) as info:
        load_profile(path)
    assert f"'{key}'" in str(info.value)
    assert "out of range" in str(info.value)


def test_range_bounds_are_inclusive(tmp_path):
    p = load_profile(write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosine = -1\nmin_top1_agreement = 1.0\n'))
    assert p.budgets.min_cosine == -1.0
    assert p.budgets.min_top1_agreement == 1.0


def test_value_not_in_choices(tmp_path):
    path = write(tmp_path, 'precision = "int4"\n[budgets]\nmin_cosine = 0.9\n')
    with pytest.raises(UsageError, match=r"'precision' must be one of int8, fp32, not 'int4'"):
        load_profile(path)


def test_target_runtime_not_in_choices(tmp_path):
    path = write(tmp_path, 'runtime = "tensorrt"\ndevice = "GPU"\n')
    with pytest.raises(UsageError, match=r"mine.toml: unknown runtime 'tensorrt' \(registered: onnxruntime, openvino"):
        load_target(path)


def test_missing_required_profile_key(tmp_path):
    path = write(tmp_path, '[budgets]\nmin_cosine = 0.9\n')
    with pytest.raises(UsageError, match=r"missing required key 'precision'"):
        load_profile(path)


def test_missing_required_budget(tmp_path):
    path = write(tmp_path, 'precision = "int8"\n[budgets]\nmax_size_mb = 10\n')
    with pytest.raises(UsageError, match=r"missing required key 'budgets.min_cosine'"):
        load_profile(path)


def test_missing_required_target_key(tmp_path):
    path = write(tmp_path, 'runtime = "onnxruntime"\n')
    with pytest.raises(UsageError, match=r"missing required key 'device'"):
        load_target(path)


def test_unknown_target_name_lists_known():
    with pytest.raises(UsageError) as info:
        load_target("gpu")
    msg = str(info.value)
    assert "unknown target 'gpu'" in msg
    assert "cpu, cuda, intel-cpu, intel-gpu, intel-npu" in msg


def test_unknown_profile_name_lists_known():
    with pytest.raises(UsageError) as info:
        load_profile("turbo")
    msg = str(info.value)
    assert "unknown profile 'turbo'" in msg
    assert "accurate, balanced, fast" in msg


def test_usage_error_exit_code():
    assert UsageError.exit_code == 2
    assert issubclass(UsageError, EdgekitError)
    with pytest.raises(UsageError) as info:
        load_target("no-such-target")
    assert info.value.exit_code == 2


# ---------------------------------------------------------------- bugs

@pytest.mark.parametrize("line", ["min_cosine = nan", "min_cosine = 0.9\nmax_latency_ms = nan"])
def test_nan_budget_rejected(tmp_path, line):
    path = write(tmp_path, f'precision = "int8"\n[budgets]\n{line}\n')
    with pytest.raises(UsageError, match="finite number"):
        load_profile(path)


def test_recovery_section_and_float_precision(tmp_path):
    path = write(tmp_path, 'precision = "int8"\nfloat_precision = "bf16"\n[budgets]\nmin_cosine = 0.9\n'
                           "[recovery]\nenabled = false\nmax_fp32_fraction = 0.25\nseconds = 30\n")
    profile = load_profile(path)
    assert (profile.float_precision, profile.recovery, profile.recovery_max_fp32_fraction, profile.recovery_seconds) == \
        ("bf16", False, 0.25, 30.0)
    assert load_profile("accurate").float_precision == "f32" and load_profile("balanced").float_precision == "bf16"
    bad = write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosine = 0.9\n[recovery]\nmax_fp32_fraction = 1.5\n')
    with pytest.raises(UsageError, match="recovery.max_fp32_fraction"):
        load_profile(bad)
    typo = write(tmp_path, 'precision = "int8"\n[budgets]\nmin_cosine = 0.9\n[recovery]\nenable = true\n')
    with pytest.raises(UsageError, match="did you mean 'enabled'"):
        load_profile(typo)
    with pytest.raises(UsageError, match="float_precision"):
        load_profile(write(tmp_path, 'precision = "int8"\nfloat_precision = "fp8"\n[budgets]\nmin_cosine = 0.9\n'))


def test_target_activation_override(tmp_path):
    assert load_target("intel-cpu").activations == "symmetric"
    assert load_target("cpu").activations is None
    path = tmp_path / "mine.toml"
    path.write_text('runtime = "openvino"\ndevice = "CPU"\nactivations = "signed"\n')
    with pytest.raises(UsageError, match="activations"):
        load_target(str(path))


def test_length_buckets(tmp_path):
    t = load_target("intel-cpu")
    assert t.length_buckets[0] >= 1 and 128 in t.length_buckets and list(t.length_buckets) == sorted(t.length_buckets)
    assert load_target("cpu").length_buckets == ()
    ov = 'runtime = "openvino"\ndevice = "CPU"\n'
    assert load_target(write(tmp_path, ov + "length_buckets = [128, 32, 64]\n")).length_buckets == (32, 64, 128)
    for bad, words in (("[]", "distinct sequence lengths"), ("[0, 8]", "distinct sequence lengths"),
                       ("[8, 8]", "distinct sequence lengths"), ("[8, true]", "distinct sequence lengths"),
                       ("[8.5]", "distinct sequence lengths"), ("64", "must be list")):
        with pytest.raises(UsageError, match=words):
            load_target(write(tmp_path, ov + f"length_buckets = {bad}\n"))
    with pytest.raises(UsageError, match="OpenVINO targets only"):
        load_target(write(tmp_path, 'runtime = "onnxruntime"\ndevice = "CPU"\nlength_buckets = [64]\n'))
    with pytest.raises(UsageError, match="exclude each other"):
        load_target(write(tmp_path, ov + "static_shapes = true\nlength_buckets = [64]\n"))


def test_split_outliers(tmp_path):
    assert load_profile("balanced").split_outliers and load_profile("fast").split_outliers
    assert load_profile(write(tmp_path, VALID_PROFILE)).split_outliers  # the default
    assert not load_profile(write(tmp_path, VALID_PROFILE.replace('"int8"\n', '"int8"\nsplit_outliers = false\n'))).split_outliers
    with pytest.raises(UsageError, match="split_outliers"):
        load_profile(write(tmp_path, VALID_PROFILE.replace('"int8"\n', '"int8"\nsplit_outliers = "yes"\n')))


def test_disabled_optimizers(tmp_path):
    assert load_target("cpu").disabled_optimizers == ("SkipLayerNormFusion",)
    assert load_target("intel-cpu").disabled_optimizers == () and load_target("cuda").disabled_optimizers == ()
    ort_target = 'runtime = "onnxruntime"\ndevice = "CPU"\n'
    assert load_target(write(tmp_path, ort_target + 'disabled_optimizers = ["GeluFusionL1", "MatMulScaleFusion"]\n')
                       ).disabled_optimizers == ("GeluFusionL1", "MatMulScaleFusion")
    for bad in ('"SkipLayerNormFusion"', '["SkipLayerNormFusion;GeluFusion"]', '["a b"]', '[1]', '["X", "X"]', '[""]'):
        with pytest.raises(UsageError, match="disabled_optimizers"):
            load_target(write(tmp_path, ort_target + f"disabled_optimizers = {bad}\n"))
    with pytest.raises(UsageError, match="ONNX Runtime targets only"):
        load_target(write(tmp_path, 'runtime = "openvino"\ndevice = "CPU"\ndisabled_optimizers = ["SkipLayerNormFusion"]\n'))


def test_contrib_ops(tmp_path):
    assert load_target("cpu").contrib_ops and not load_target("intel-cpu").contrib_ops
    assert not load_target(write(tmp_path, 'runtime = "onnxruntime"\ndevice = "CPU"\n')).contrib_ops  # the default
    with pytest.raises(UsageError, match="ONNX Runtime targets only"):
        load_target(write(tmp_path, 'runtime = "openvino"\ndevice = "CPU"\ncontrib_ops = true\n'))
