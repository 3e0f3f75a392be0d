"""Issue 18, Ray: a project built through a real local Ray cluster, one task per model, its bundles collected on the
submitting side, byte-identical artifacts to a local build."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit.cli import main

from test_project import project  # noqa: F401  (the fixture: bert and cnn for cpu and intel-cpu)

ray = pytest.importorskip("ray")


def run(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_project_builds_through_ray_as_it_builds_here(project, local_ray, tmp_path):  # noqa: F811
    result = run("--project", str(project / "edgekit.toml"), "--executor", "ray", "--no-bench", "--no-cache", "-q")
    assert result.exit_code == 0, result.output
    on_ray = {name: json.loads((project / "build" / "edgekit" / name / "manifest.json").read_text()) for name in ("bert", "cnn")}
    shutil.move(project / "build", tmp_path / "ray-build")
    result = run("--project", str(project / "edgekit.toml"), "--no-bench", "--no-cache", "-q")
    assert result.exit_code == 0, result.output
    for name, manifest in on_ray.items():
        here = json.loads((project / "build" / "edgekit" / name / "manifest.json").read_text())
        assert manifest["artifact_sha256"] == here["artifact_sha256"], name
        assert (tmp_path / "ray-build" / "edgekit" / name / "report.json").is_file()
    assert not list((project / "build" / "edgekit").glob(".*partial*"))


def test_ray_options_need_a_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_usage_error(CliRunner().invoke(main, ["compile", "model.onnx", "--executor", "ray"]), "--executor ray works on")
    assert_usage_error(CliRunner().invoke(main, ["compile", "model.onnx", "--address", "auto"]), "--address works on")


def test_a_bundle_is_never_written_over_a_folder_that_is_not_one(tmp_path):
    from edgekit.errors import UsageError
    from edgekit.ray_executor import _pack, _unpack

    source = tmp_path / "bundle"
    source.mkdir()
    (source / "manifest.json").write_text("{}")
    (source / "cpu").mkdir()
    (source / "cpu" / "model.onnx").write_bytes(b"model")
    data = _pack(source)
    out = tmp_path / "out" / "m"
    _unpack(data, out)
    assert (out / "cpu" / "model.onnx").read_bytes() == b"model"
    _unpack(data, out)  # an earlier bundle is replaced
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an edgekit bundle"):
        _unpack(data, precious)
    assert (precious / "thesis.txt").read_text() == "mine"
