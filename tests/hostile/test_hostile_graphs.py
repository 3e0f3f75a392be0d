"""Malformed graphs and paths out of a bundle: ONNX cycles and dangling inputs, protobufs that are not
ONNX, an OpenVINO IR without (or with a short) `.bin`, `--shape` memory bombs, and bundle files that
link or point outside their bundle for `report`, `verify` and `embed`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error, rehash
from hostile_inputs import matmul_model, snapshot
from onnx import TensorProto, helper, numpy_helper

from edgekit.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def save(graph: onnx.GraphProto, path: Path) -> Path:
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def vector(name: str, dims=(1, 4)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


# ---------------------------------------------------------------- ONNX structure

def cycle_model(path: Path) -> Path:
    """z = Add(x, c); c = Relu(z): each node waits on the other."""
    nodes = [helper.make_node("Add", ["x", "c"], ["z"], name="add"), helper.make_node("Relu", ["z"], ["c"], name="relu")]
    return save(helper.make_graph(nodes, "cycle", [vector("x")], [vector("z")]), path)


def dangling_model(path: Path) -> Path:
    nodes = [helper.make_node("Add", ["x", "ghost"], ["z"], name="add")]
    return save(helper.make_graph(nodes, "dangling", [vector("x")], [vector("z")]), path)


def orphan_output_model(path: Path) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["z"], name="relu")]
    return save(helper.make_graph(nodes, "orphan", [vector("x")], [vector("z"), vector("nowhere")]), path)


@pytest.mark.parametrize("build, fragments", [
    (cycle_model, ("the graph has a cycle", "2 nodes", "acyclic")),
    (dangling_model, ("node 'add' (Add) reads 'ghost'", "dangling input")),
    (orphan_output_model, ("graph output 'nowhere' is produced by no node",)),
], ids=["cycle", "dangling-input", "orphan-output"])
def test_malformed_graph_refused_before_any_runtime(tmp_path, build, fragments):
    model = build(tmp_path / "bad.onnx")
    before = snapshot(tmp_path)
    result = invoke("compile", "-q", str(model), "-t", "cpu", "-o", str(tmp_path / "out"))
    assert_usage_error(result, "bad.onnx", *fragments)
    assert snapshot(tmp_path) == before


def test_unsorted_but_acyclic_graph_still_compiles(tmp_path, quick_profile):
    """ONNX wants nodes in order, but runtimes sort them: a shuffled acyclic graph is not a cycle."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("Relu", ["h"], ["y"], name="relu"), helper.make_node("MatMul", ["x", "W"], ["h"], name="mm")]
    model = save(helper.make_graph(nodes, "shuffled", [vector("x")], [vector("y")], [w]), tmp_path / "shuffled.onnx")
    result = invoke("compile", "-q", str(model), "-t", "cpu", "--profile", str(quick_profile), "-o", str(tmp_path / "out"))
    assert result.exit_code in (0, 1), result.output
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_protobuf_that_is_not_onnx_refused(tmp_path):
    path = tmp_path / "tensor.onnx"
    path.write_bytes(numpy_helper.from_array(np.ones((3, 3), np.float32), "t").SerializeToString())
    result = invoke("compile", "-q", str(path), "-t", "cpu", "-o", str(tmp_path / "out"))
    assert_usage_error(result, "tensor.onnx", "not a readable ONNX model")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- --shape memory bombs

def dynamic_relu(path: Path) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    return save(helper.make_graph(nodes, "dyn", [vector("x", ["n", "m"])], [vector("y", ["n", "m"])]), path)


def test_shape_memory_bomb_refused_with_the_figure(tmp_path):
    model = dynamic_relu(tmp_path / "dyn.onnx")
    before = snapshot(tmp_path)
    result = invoke("compile", "-q", str(model), "-t", "cpu", "--shape", "x=1000000,1000000", "-o", str(tmp_path / "out"))
    assert_usage_error(result, "--shape", "x [1000000, 1000000]", "4,000,000,000,000 bytes a sample", "EDGEKIT_MAX_INPUT_BYTES")
    assert snapshot(tmp_path) == before


def test_shape_memory_limit_is_configurable(tmp_path, monkeypatch):
    model = dynamic_relu(tmp_path / "dyn.onnx")
    monkeypatch.setenv("EDGEKIT_MAX_INPUT_BYTES", "1000")
    result = invoke("compile", "-q", str(model), "-t", "cpu", "--shape", "x=1,64", "-o", str(tmp_path / "out"))
    assert_usage_error(result, "256 bytes a sample", "limit of 1,000 bytes")
    result = invoke("bench", str(model), "--shape", "x=1,1000", "--duration", "0.1")
    assert_usage_error(result, "4,000 bytes a sample", "limit of 1,000 bytes")


# ---------------------------------------------------------------- OpenVINO IR

def ir_of(folder: Path) -> Path:
    import openvino as ov

    onnx.save(matmul_model(), str(folder / "mm.onnx"))
    xml = folder / "ir" / "model.xml"
    ov.save_model(ov.Core().read_model(str(folder / "mm.onnx")), str(xml), compress_to_fp16=False)
    return xml


def test_ir_without_its_bin_refused(tmp_path):
    xml = ir_of(tmp_path)
    xml.with_suffix(".bin").unlink()
    assert_usage_error(invoke("bench", str(xml)), "model.xml", "model.bin is missing", "64 bytes of constants")


def test_ir_with_a_truncated_bin_refused(tmp_path):
    xml = ir_of(tmp_path)
    with xml.with_suffix(".bin").open("r+b") as fh:
        fh.truncate(10)
    assert_usage_error(invoke("bench", str(xml)), "model.bin holds 10 bytes", "up to byte 64")


def test_ir_that_is_not_xml_refused(tmp_path):
    xml = tmp_path / "model.xml"
    xml.write_text("<net><layers><layer")
    assert_usage_error(invoke("bench", str(xml)), "not a readable OpenVINO IR")


def test_intact_ir_benches(tmp_path):
    result = invoke("bench", str(ir_of(tmp_path)), "--duration", "0.2")
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- paths out of a bundle

@pytest.fixture
def bundle_copy(cnn_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(cnn_bundle, copy)
    return copy


def outside_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"targets": [], "original": {"latency_ms": {}}}))
    return secret


@pytest.mark.parametrize("name", ["report.json", "manifest.json"])
def test_report_refuses_bundle_files_linked_from_outside(bundle_copy, tmp_path, name):
    (bundle_copy / name).unlink()
    (bundle_copy / name).symlink_to(outside_file(tmp_path))
    assert_usage_error(invoke("report", str(bundle_copy)), name, "resolves outside the bundle")


def test_verify_refuses_a_manifest_linked_from_outside(bundle_copy, tmp_path):
    real = tmp_path / "elsewhere.json"
    shutil.move(bundle_copy / "manifest.json", real)
    (bundle_copy / "manifest.json").symlink_to(real)
    assert_usage_error(invoke("verify", str(bundle_copy)), "manifest.json", "resolves outside the bundle")


def point_artifact(bundle: Path, target: str, artifact: str) -> None:
    """Make `target`'s runtime.json name `artifact`, and the manifest agree with it (so no hash check can stop the
    read: only the path check can, and removing it fails these tests)."""
    settings_path = bundle / target / "runtime.json"
    settings = json.loads(settings_path.read_text())
    settings["artifact"] = artifact
    settings_path.write_text(json.dumps(settings))
    rehash(bundle, f"{target}/runtime.json")


OUTSIDE_ARTIFACTS = ["../x.onnx", "../../secret.json", "/etc/hostname"]


@pytest.mark.parametrize("artifact", OUTSIDE_ARTIFACTS)
def test_embed_refuses_an_artifact_outside_the_bundle(bundle_copy, tmp_path, artifact):
    outside_file(tmp_path)
    point_artifact(bundle_copy, "cpu", artifact)
    result = invoke("embed", str(bundle_copy / "cpu"), "-o", str(tmp_path / "fw"))
    assert_usage_error(result, "cpu/runtime.json", "leaves the bundle")
    assert not (tmp_path / "fw").exists()


@pytest.mark.parametrize("artifact", OUTSIDE_ARTIFACTS)
def test_verify_refuses_an_artifact_outside_the_bundle(bundle_copy, tmp_path, artifact):
    """The bundle reader checks every runtime.json's artifact path before any file is hashed or opened."""
    outside_file(tmp_path)
    point_artifact(bundle_copy, "cpu", artifact)
    assert_usage_error(invoke("verify", str(bundle_copy)), "cpu/runtime.json", "leaves the bundle")


@pytest.mark.parametrize("artifact", OUTSIDE_ARTIFACTS)
def test_bench_refuses_an_artifact_outside_the_bundle(bundle_copy, tmp_path, artifact):
    """bench reads a bundle with the same reader: it never follows runtime.json out of the bundle."""
    outside_file(tmp_path)
    (tmp_path / "x.onnx").write_bytes((bundle_copy / "cpu" / "model.onnx").read_bytes())  # a real model there
    point_artifact(bundle_copy, "cpu", artifact)
    assert_usage_error(invoke("bench", str(bundle_copy), "--duration", "0.1"), "cpu/runtime.json", "leaves the bundle")


@pytest.mark.parametrize("command", ["verify", "bench", "embed"])
def test_an_artifact_linked_out_of_the_bundle_is_refused(bundle_copy, tmp_path, command):
    """A symlinked artifact name that resolves outside the target's folder is refused by each reader."""
    (tmp_path / "x.onnx").write_bytes((bundle_copy / "cpu" / "model.onnx").read_bytes())
    (bundle_copy / "cpu" / "link.onnx").symlink_to(tmp_path / "x.onnx")
    point_artifact(bundle_copy, "cpu", "link.onnx")
    args = {"verify": [str(bundle_copy)], "bench": [str(bundle_copy), "--duration", "0.1"],
            "embed": [str(bundle_copy / "cpu"), "-o", str(tmp_path / "fw")]}[command]
    assert_usage_error(invoke(command, *args), "cpu/runtime.json", "resolves outside the bundle")


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.pop("files"), "no 'files' list"),
    (lambda m: m["files"][0].pop("path"), "a file entry has no path"),
    (lambda m: m.update(targets=["../elsewhere"]), "is not a folder of the bundle"),
], ids=["no-files", "entry-without-path", "target-outside"])
def test_verify_refuses_a_manifest_with_missing_or_bad_fields(bundle_copy, edit, fragment):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    edit(manifest)
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(bundle_copy.parent)
    assert_usage_error(invoke("verify", str(bundle_copy)), "manifest.json", fragment)
    assert snapshot(bundle_copy.parent) == before
