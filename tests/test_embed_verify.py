"""`edgekit verify` and `edgekit embed`: a bundle checked, then turned into firmware sources."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error, embed_c, rehash

from edgekit.cli import main

GCC = ["gcc", "-std=c99", "-Wall", "-Wextra", "-pedantic"]


@pytest.fixture(scope="module")
def bundle(cnn_bundle):
    return cnn_bundle


@pytest.fixture
def copy(bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_bundle_stores_a_small_reference(bundle):
    listed = {e["path"] for e in json.loads((bundle / "manifest.json").read_text())["files"]}
    for target in ("cpu", "intel-cpu"):
        assert {f"{target}/reference.npz", f"{target}/reference.json"} <= listed
        assert (bundle / target / "reference.npz").stat().st_size < 64 * 1024
        tolerance = json.loads((bundle / target / "reference.json").read_text())["tolerance"]
        assert tolerance["min_cosine"] == 0.999 and tolerance["max_abs_error"] > 0


def test_verify_intact_and_moved(bundle, tmp_path):
    result = run("verify", str(bundle))
    assert result.exit_code == 0, result.output
    assert "ok  cpu: onnxruntime CPU" in result.stdout and "ok  intel-cpu: openvino CPU" in result.stdout
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(bundle, moved)
    result = run("verify", str(moved))
    assert result.exit_code == 0, result.output


def test_verify_names_a_flipped_byte(copy):
    path = copy / "intel-cpu" / "model.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run("verify", str(copy))
    assert result.exit_code == 1, result.output
    assert "intel-cpu/model.bin" in result.stderr and "sha256" in result.stderr


def test_verify_fails_on_a_changed_reference_output(copy):
    npz = copy / "cpu" / "reference.npz"
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    key = next(k for k in arrays if k.startswith("output:"))
    arrays[key] = arrays[key] + 1.0
    np.savez(npz, **arrays)
    rehash(copy, "cpu/reference.npz")
    result = run("verify", str(copy))
    assert result.exit_code == 1, result.output
    assert "cpu/model.onnx" in result.stderr and "differs from cpu/reference.npz" in result.stderr


def test_verify_usage_errors(copy, tmp_path):
    assert_usage_error(run("verify", str(tmp_path / "missing")), "not a folder")
    (tmp_path / "plain").mkdir()
    assert_usage_error(run("verify", str(tmp_path / "plain")), "not an edgekit bundle")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][0]["path"] = "../outside.txt"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert_usage_error(run("verify", str(copy)), "leaves the bundle")
    manifest["files"][0]["path"] = "link.txt"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "secret.txt").write_text("x")
    (copy / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert_usage_error(run("verify", str(copy)), "resolves outside the bundle")


def compile_and_dump(out, prefix, arrays, tmp_path):
    """Compile the embed output with a tiny main that writes each array to a file; return the files' bytes."""
    main_c = tmp_path / "main.c"
    writes = "\n".join(f'  f = fopen("{a}.out", "wb"); if (!f) return 1; '
                       f"fwrite({prefix}_{a}, 1, {prefix}_{a}_len, f); fclose(f);" for a in arrays)
    up = prefix.upper()
    config = (f"#ifdef {up}_SESSION_CONFIG\nstatic const char *config[{up}_NUM_SESSION_CONFIG][2] = {up}_SESSION_CONFIG;\n"
              f"#endif\n")
    use = f"#ifdef {up}_SESSION_CONFIG\n  if (config[0][0][0] != 'o') return 3;\n#endif\n"
    main_c.write_text(f'#include <stdio.h>\n#include "{prefix}.h"\n{config}int main(void) {{\n  FILE *f;\n{use}'
                      f"  if (((size_t){prefix}_model) % {up}_ALIGNMENT) return 2;\n{writes}\n  return 0;\n}}\n")
    for src in (out / f"{prefix}.c", main_c):
        done = subprocess.run([*GCC, "-c", str(src), "-I", str(out), "-o", str(tmp_path / (src.stem + ".o"))],
                              capture_output=True, text=True)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    exe = tmp_path / "dump"
    subprocess.run(["gcc", str(tmp_path / f"{prefix}.o"), str(tmp_path / "main.o"), "-o", str(exe)], check=True)
    subprocess.run([str(exe)], cwd=tmp_path, check=True)
    return {a: (tmp_path / f"{a}.out").read_bytes() for a in arrays}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_embed_c_onnx_compiles_and_bytes_match(bundle, tmp_path):
    out = tmp_path / "fw"
    header = embed_c(bundle / "cpu", out, "cnn", "--name", "cnn")
    assert '#define CNN_RUNTIME "onnxruntime"' in header and "CNN_RUNTIME_MIN_VERSION" in header
    assert '#define CNN_INPUT0_NAME "input"' in header and "#define CNN_INPUT0_SHAPE { 1, 3, 32, 32 }" in header
    assert '#define CNN_INPUT0_DTYPE "float32"' in header and "#define CNN_NUM_OUTPUTS 1" in header
    artifact = (bundle / "cpu" / "model.onnx").read_bytes()
    assert f'#define CNN_MODEL_SHA256 "{hashlib.sha256(artifact).hexdigest()}"' in header
    assert "aligned(64)" in (out / "cnn.c").read_text()
    # The session config it was verified and timed with (targets/cpu.toml's disabled_optimizers), as C pairs.
    assert ('#define CNN_SESSION_CONFIG { { "optimization.disable_specified_optimizers", "SkipLayerNormFusion" } }'
            in header and "#define CNN_NUM_SESSION_CONFIG 1" in header)
    assert compile_and_dump(out, "cnn", ["model"], tmp_path) == {"model": artifact}
    # A QDQ graph quantises its float input at the edge: the scale and zero point are given.
    if "#define CNN_INPUT0_QUANTIZED 1" in header:
        assert "CNN_INPUT0_SCALE" in header and "CNN_INPUT0_ZERO_POINT" in header


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_embed_c_openvino_ir_two_arrays(bundle, tmp_path):
    out = tmp_path / "fw"
    header = embed_c(bundle / "intel-cpu", out, "edgekit_intel_cpu", "--align", "128")
    assert '#define EDGEKIT_INTEL_CPU_RUNTIME "openvino"' in header and "#define EDGEKIT_INTEL_CPU_ALIGNMENT 128" in header
    assert "#define EDGEKIT_INTEL_CPU_INPUT0_QUANTIZED 0" in header
    dumped = compile_and_dump(out, "edgekit_intel_cpu", ["model", "weights"], tmp_path)
    assert dumped == {"model": (bundle / "intel-cpu" / "model.xml").read_bytes(),
                      "weights": (bundle / "intel-cpu" / "model.bin").read_bytes()}
    # An earlier embed's folder is replaced whole.
    assert run("embed", str(bundle / "intel-cpu"), "-o", str(out), "--name", "again").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["again.c", "again.h", "embed.json"]


def test_embed_bin_copies_the_files(bundle, tmp_path):
    out = tmp_path / "rootfs"
    result = run("embed", str(bundle / "intel-cpu"), "--format", "bin", "-o", str(out))
    assert result.exit_code == 0, result.output
    for name in ("model.xml", "model.bin", "runtime.json"):
        assert (out / name).read_bytes() == (bundle / "intel-cpu" / name).read_bytes()
    assert (out / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    assert not list(tmp_path.glob(".rootfs.partial-*"))


def test_embed_bad_inputs(bundle, copy, tmp_path):
    out = str(tmp_path / "fw")
    assert_usage_error(run("embed", str(bundle), "-o", out), "not a bundle target folder")
    assert_usage_error(run("embed", str(tmp_path / "nothing"), "-o", out), "no runtime.json")
    assert_usage_error(run("embed", str(bundle / "cpu"), "-o", out, "--align", "48"), "power of two")
    assert_usage_error(run("embed", str(bundle / "cpu"), "-o", out, "--name", "9bad-name"), "not a C identifier")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert_usage_error(run("embed", str(bundle / "cpu"), "-o", str(tmp_path / "taken")), "not written by edgekit embed")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    path = copy / "cpu" / "model.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert_usage_error(run("embed", str(copy / "cpu"), "-o", out), "does not match manifest.json")
    assert not (tmp_path / "fw").exists()
