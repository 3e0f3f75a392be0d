"""Hostile models: remote code, pickled weights, ONNX external data outside the model, size bombs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from cli_helpers import assert_usage_error
from hostile_inputs import Payload, bomb_model, copy_model, external_data_model, matmul_model, snapshot

from edgekit import graph
from edgekit.cli import main
from edgekit.source import resolve_source


def run(*args: str):
    return CliRunner().invoke(main, ["compile", "-q", *args])


# ---------------------------------------------------------------- remote code

def remote_code_model(bert_dir: Path, folder: Path, marker: Path) -> Path:
    copy_model(bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    (folder / "configuration_evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    return folder


def test_remote_code_refused_naming_the_files(bert_dir, tmp_path):
    marker = tmp_path / "ran.txt"
    model = remote_code_model(bert_dir, tmp_path / "custom", marker)
    before = snapshot(tmp_path)
    result = run(str(model), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "custom Python code", "modeling_evil.py", "configuration_evil.py", "--trust-remote-code")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_remote_code_accepted_with_trust(bert_dir, tmp_path):
    model = remote_code_model(bert_dir, tmp_path / "custom", tmp_path / "ran.txt")
    source = resolve_source(model, trust_remote_code=True)
    assert source.trust_remote_code and source.weights_format == "safetensors"


def test_compile_has_trust_remote_code_option():
    result = CliRunner().invoke(main, ["compile", "--help"])
    assert "--trust-remote-code" in result.output and "--force" in result.output


# ---------------------------------------------------------------- pickled weights

def test_safetensors_preferred_over_a_bin_beside_it(bert_dir, tmp_path):
    from edgekit.stages.export import load_model

    marker = tmp_path / "ran.txt"
    model = copy_model(bert_dir, tmp_path / "both")
    torch.save({"weight": Payload(marker)}, model / "pytorch_model.bin")
    source = resolve_source(model)
    assert source.weights_format == "safetensors"
    load_model(source)
    assert not marker.exists()


def test_hostile_pickle_refused_without_running(bert_dir, tmp_path):
    marker = tmp_path / "ran.txt"
    model = copy_model(bert_dir, tmp_path / "evil", weights=False)
    torch.save({"weight": Payload(marker)}, model / "pytorch_model.bin")
    # The payload is real: plain unpickling would run it (checked on a copy aimed elsewhere).
    control = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(Payload(control)))
    assert control.exists()
    control.unlink()
    before = snapshot(tmp_path)
    result = run(str(model), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "pytorch_model.bin", "restricted loader", "weights_only")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


def test_pickle_only_weights_load_and_are_recorded(bert_dir, quick_profile, tmp_path):
    from safetensors.torch import load_file

    model = copy_model(bert_dir, tmp_path / "pickled", weights=False)
    torch.save(load_file(str(bert_dir / "model.safetensors")), model / "pytorch_model.bin")
    assert resolve_source(model).weights_format == "pickle"
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(model), "--profile", str(quick_profile), "-o", str(out), "-q"])
    assert result.exit_code in (0, 1), result.output
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["weights_format"] == "pickle"


# ---------------------------------------------------------------- ONNX external data

@pytest.fixture
def no_data_reads(monkeypatch):
    """Fail the test if any external data is read."""
    import onnx.external_data_helper as helper

    def refuse(*args, **kwargs):
        raise AssertionError("external data was read")

    monkeypatch.setattr(helper, "load_external_data_for_tensor", refuse)


@pytest.mark.parametrize("location, fragment", [
    ("../secret.bin", "'..'"),
    ("sub/../../secret.bin", "'..'"),
    ("/etc/passwd", "absolute path"),
])
def test_external_data_outside_the_model_refused(tmp_path, no_data_reads, location, fragment):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    model = external_data_model(tmp_path / "model", location)
    before = snapshot(tmp_path)
    result = run(str(model), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "model.onnx", location, fragment, "inside the model's folder")
    assert snapshot(tmp_path) == before


def test_external_data_through_a_symlink_refused(tmp_path, no_data_reads):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    model = external_data_model(tmp_path / "model", "weights.bin")
    (tmp_path / "model" / "weights.bin").unlink()
    (tmp_path / "model" / "weights.bin").symlink_to(tmp_path / "secret.bin")
    result = run(str(model), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "weights.bin", "resolves outside the model folder")
    assert not (tmp_path / "out").exists()


def test_external_data_inside_the_folder_loads(tmp_path):
    model = external_data_model(tmp_path / "model", "weights.bin")
    loaded = graph.load(model)
    assert onnx.numpy_helper.to_array(loaded.graph.initializer[0]).shape == (4, 4)


# ---------------------------------------------------------------- resource bombs

def test_initializer_bomb_refused_with_the_figure(tmp_path, no_data_reads):
    model = bomb_model(tmp_path / "bomb" / "bomb.onnx")
    result = run(str(model), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "bomb.onnx", f"{(1 << 40) * 4 + 16:,} bytes", "EDGEKIT_MAX_MODEL_BYTES")
    assert not (tmp_path / "out").exists()


def test_model_byte_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(matmul_model(), str(path))
    monkeypatch.setenv("EDGEKIT_MAX_MODEL_BYTES", "32")
    assert_usage_error(run(str(path), "-o", str(tmp_path / "out")), "80 bytes", "over the limit of 32 bytes")
    monkeypatch.setenv("EDGEKIT_MAX_MODEL_BYTES", "lots")
    assert_usage_error(run(str(path), "-o", str(tmp_path / "out")), "EDGEKIT_MAX_MODEL_BYTES='lots'")


# ---------------------------------------------------------------- malformed graphs (found by the fuzz test)

def test_input_without_a_tensor_type_refused(tmp_path):
    model = matmul_model()
    model.graph.input[0].ClearField("type")
    path = tmp_path / "untyped.onnx"
    path.write_bytes(model.SerializeToString())
    assert_usage_error(run(str(path), "-o", str(tmp_path / "out")), "input 'x' has no tensor type")
    assert not (tmp_path / "out").exists()


def test_graph_without_outputs_refused(tmp_path):
    model = matmul_model()
    del model.graph.output[:]
    path = tmp_path / "no-outputs.onnx"
    path.write_bytes(model.SerializeToString())
    assert_usage_error(run(str(path), "-o", str(tmp_path / "out")), "no-outputs.onnx", "has no outputs")
