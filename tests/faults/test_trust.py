"""What verify, embed and the project file accept (issue 17 §6, §7, §10, §11, §12): each refusal was missing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.bundle import artifact_digest
from edgekit.cli import main
from edgekit.embed import _c_string
from edgekit.errors import UsageError
from edgekit.project import load_project
from edgekit.source import sha256_file
from edgekit.verify_bundle import verify


def _copy(cnn_bundle, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(cnn_bundle, out)
    return out


def _edit_runtime(bundle: Path, relist: bool) -> None:
    path = bundle / "cpu" / "runtime.json"
    record = json.loads(path.read_text())
    record["intra_op_num_threads"] = 64
    path.write_text(json.dumps(record, indent=2))
    if relist:  # the manifest's file entry edited to match the changed file; its artifact_sha256 left as built
        manifest = json.loads((bundle / "manifest.json").read_text())
        for entry in manifest["files"]:
            if entry["path"] == "cpu/runtime.json":
                entry.update(sha256=sha256_file(path), size=path.stat().st_size)
        (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_verify_recomputes_the_artifact_digest_of_an_edited_manifest(cnn_bundle, tmp_path):
    bundle = _copy(cnn_bundle, tmp_path)
    assert verify(bundle).ok
    _edit_runtime(bundle, relist=True)
    result = verify(bundle)
    assert not result.ok and "artifact_sha256 does not match" in result.mismatch
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert artifact_digest(manifest["files"]) != manifest["artifact_sha256"]


@pytest.mark.parametrize("relist", [False, True])
def test_embed_refuses_an_edited_runtime_json(cnn_bundle, tmp_path, relist):
    bundle = _copy(cnn_bundle, tmp_path)
    _edit_runtime(bundle, relist)
    result = CliRunner().invoke(main, ["embed", str(bundle / "cpu"), "-f", "bin", "-o", str(tmp_path / "fw")])
    assert result.exit_code == 2, result.output
    assert ("runtime.json: its sha256 does not match" in result.stderr if not relist
            else "artifact_sha256 does not match" in result.stderr)
    assert not (tmp_path / "fw").exists()


def test_c_strings_carry_utf8_bytes():
    literal = _c_string("entrée→x")
    assert literal == '"entr\\303\\251e\\342\\206\\222x"'
    escaped = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), literal[1:-1])
    assert escaped.encode("latin-1").decode("utf-8") == "entrée→x"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_a_c_compiler_reads_back_the_same_bytes(tmp_path):
    source = tmp_path / "s.c"
    source.write_text('#include <stdio.h>\nint main(void){fputs(' + _c_string("entrée→x") + ', stdout);return 0;}\n')
    subprocess.run(["cc", str(source), "-o", str(tmp_path / "s")], check=True)
    assert subprocess.run([str(tmp_path / "s")], capture_output=True, check=True).stdout == "entrée→x".encode()


def _project(tmp_path, body: str) -> Path:
    path = tmp_path / "edgekit.toml"
    path.write_text(body)
    return path


def test_a_model_name_with_a_trailing_newline_is_refused(tmp_path):
    path = _project(tmp_path, '[[models]]\nname = "m\\n"\nsource = "m.onnx"\n')
    with pytest.raises(UsageError, match="'name' must be usable as a folder name"):
        load_project(path)


@pytest.mark.parametrize("output", ["/", "~"])
def test_a_project_output_of_root_or_home_is_refused(tmp_path, output):
    path = _project(tmp_path, f'[defaults]\noutput = "{output}"\n[[models]]\nname = "m"\nsource = "m.onnx"\n')
    with pytest.raises(UsageError, match="file system root or your home folder"):
        load_project(path)


def test_an_unwritable_junit_path_is_refused_before_the_build(cnn_onnx, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compile", str(cnn_onnx), "-t", "cpu", "--shape", "input=1,3,32,32", "-o", str(out),
                                       "--junit", str(tmp_path / "afile" / "j.xml")])
    assert result.exit_code == 2, result.output
    assert "--junit" in result.stderr and "is a file, not a folder" in result.stderr
    assert not out.exists()


def _bench(*args: str):
    return CliRunner().invoke(main, ["bench", *args, "--duration", "0.2"])


def test_bench_refuses_a_byte_flipped_artifact(cnn_bundle, tmp_path):
    bundle = _copy(cnn_bundle, tmp_path)
    artifact = bundle / "cpu" / "model.onnx"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    result = _bench(str(bundle))
    assert result.exit_code == 2, result.output
    assert "does not match its manifest" in result.stderr and "cpu/model.onnx" in result.stderr


@pytest.mark.parametrize("other", ["another model", "/etc/passwd"])
def test_bench_original_must_be_the_model_compiled(cnn_bundle, cnn_onnx_opset11, tmp_path, other):
    bundle = _copy(cnn_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"]["location"] = str(cnn_onnx_opset11) if other == "another model" else other
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    result = _bench(str(bundle), "--original")
    assert result.exit_code == 2, result.output
    assert "--original" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["verify", "bench", "embed"])
@pytest.mark.parametrize("text", ["{ not json", '{"target": "cpu", "runtime": "onnxruntime"}',
                                  '{"target": "cpu", "artifact": 3, "runtime": "onnxruntime"}'],
                         ids=["not-json", "no-artifact", "wrong-type"])
def test_a_bad_runtime_json_is_exit_2_for_every_reader(cnn_bundle, tmp_path, command, text):
    from cli_helpers import assert_usage_error, rehash

    bundle = _copy(cnn_bundle, tmp_path)
    (bundle / "cpu" / "runtime.json").write_text(text)
    rehash(bundle, "cpu/runtime.json")  # consistent with the manifest: the record's own check must refuse it
    args = {"verify": [str(bundle)], "bench": [str(bundle), "--duration", "0.2"],
            "embed": [str(bundle / "cpu"), "-f", "bin", "-o", str(tmp_path / "fw")]}[command]
    assert_usage_error(CliRunner().invoke(main, [command, *args]), "cpu/runtime.json")


def test_a_cache_on_a_full_disk_never_fails_the_build(cnn_onnx, tmp_path, monkeypatch, caplog):
    import errno
    import os

    from edgekit import cache

    real = shutil.copyfile

    def full(src, dst, *a, **k):
        if "/v1/tmp/" in str(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(cache.shutil, "copyfile", full)
    caplog.set_level("WARNING", logger="edgekit")
    result = CliRunner().invoke(main, ["compile", str(cnn_onnx), "-t", "cpu", "--shape", "input=1,3,32,32", "--no-bench",
                                       "--progress", "none", "-o", str(tmp_path / "out")])
    assert result.exit_code in (0, 1), result.output
    assert "could not store" in caplog.text and verify(tmp_path / "out").ok
    assert not list((Path(os.environ["EDGEKIT_CACHE_DIR"]) / "v1").glob("*/*/entry.json"))
