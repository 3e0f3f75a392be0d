"""The bundle folder: written whole or not at all, with a verifiable manifest."""

from __future__ import annotations

import hashlib
import json
import numpy as np
import pytest

from edgekit.bundle import BundleWriter, check_output, clean_json, write_json
from edgekit.errors import UsageError


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def leftovers(parent, name):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_existing_bundle(out):
    out.mkdir()
    # A bundle lists every file it holds; a file it does not list is the user's (see test_hostile_files).
    (out / "manifest.json").write_text('{"format": "edgekit-bundle/1", "files": [{"path": "old.txt"}, {"path": "cpu/model.onnx"}]}\n')
    (out / "old.txt").write_text("old artifact")
    (out / "cpu").mkdir()
    (out / "cpu" / "model.onnx").write_bytes(b"old model")
    return snapshot(out)


# ---------------------------------------------------------------- all or nothing

def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with BundleWriter(out) as bundle:
            assert bundle.root.parent == tmp_path
            assert bundle.root.name.startswith(".out.partial-")
            (bundle.folder("cpu") / "model.onnx").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not out.exists()
    assert leftovers(tmp_path, "out") == []
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with BundleWriter(out) as bundle:
            (bundle.root / "x").write_text("x")
            raise KeyboardInterrupt
    assert not out.exists()
    assert leftovers(tmp_path, "out") == []


def test_no_commit_means_no_output(tmp_path):
    out = tmp_path / "out"
    with BundleWriter(out) as bundle:
        (bundle.root / "x").write_text("x")
    assert not out.exists()
    assert leftovers(tmp_path, "out") == []


def test_commit_creates_output_and_parent(tmp_path):
    out = tmp_path / "deep" / "er" / "out"
    with BundleWriter(out) as bundle:
        (bundle.folder("cpu") / "model.onnx").write_bytes(b"model")
        bundle.write_manifest({"kind": "onnx"}, {})
        assert bundle.commit() == out.resolve()
    assert (out / "cpu" / "model.onnx").read_bytes() == b"model"
    assert (out / "manifest.json").is_file()
    assert (out.stat().st_mode & 0o777) == 0o755
    assert leftovers(out.parent, "out") == []


def test_existing_bundle_kept_when_new_write_fails(tmp_path):
    out = tmp_path / "out"
    before = make_existing_bundle(out)
    with pytest.raises(ValueError):
        with BundleWriter(out) as bundle:
            (bundle.root / "new.txt").write_text("new")
            bundle.write_manifest({}, {})
            raise ValueError("stage failed")
    assert snapshot(out) == before
    assert leftovers(tmp_path, "out") == []


def test_existing_bundle_replaced_after_commit(tmp_path):
    out = tmp_path / "out"
    make_existing_bundle(out)
    with BundleWriter(out) as bundle:
        (bundle.root / "new.txt").write_text("new")
        # the old bundle is untouched until commit
        assert (out / "old.txt").read_text() == "old artifact"
        bundle.write_manifest({}, {})
        bundle.commit()
    assert sorted(snapshot(out)) == ["manifest.json", "new.txt"]
    assert not (out / "old.txt").exists() and not (out / "cpu").exists()
    assert leftovers(tmp_path, "out") == []  # no .out.partial-* nor .out.old-*


def test_empty_existing_folder_is_accepted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with BundleWriter(out) as bundle:
        (bundle.root / "a.txt").write_text("a")
        bundle.commit()
    assert (out / "a.txt").read_text() == "a"


def test_non_bundle_folder_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(out)
    with pytest.raises(UsageError) as info:
        BundleWriter(out)
    assert "not an edgekit bundle" in str(info.value)
    assert info.value.exit_code == 2
    assert snapshot(out) == before
    assert leftovers(tmp_path, "out") == []


def test_output_that_is_a_file_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(UsageError, match="is a file"):
        BundleWriter(out)
    assert out.read_text() == "a file"
    assert leftovers(tmp_path, "out") == []


def test_check_output_accepts_missing_and_bundle(tmp_path):
    check_output(tmp_path / "missing")
    out = tmp_path / "b"
    make_existing_bundle(out)
    check_output(out)


def test_folder_becomes_non_bundle_before_commit(tmp_path):
    out = tmp_path / "out"
    with BundleWriter(out) as bundle:
        (bundle.root / "a.txt").write_text("a")
        out.mkdir()
        (out / "mine.txt").write_text("user file written meanwhile")
        with pytest.raises(UsageError):
            bundle.commit()
    assert (out / "mine.txt").read_text() == "user file written meanwhile"
    assert leftovers(tmp_path, "out") == []


# ---------------------------------------------------------------- manifest

def test_manifest_lists_every_file(tmp_path):
    out = tmp_path / "out"
    contents = {"report.json": b'{"a": 1}', "cpu/model.onnx": b"\x08\x01" * 100, "cpu/deep/weights.bin": b"w" * 3000,
                "README.md": b""}
    with BundleWriter(out) as bundle:
        for rel, data in contents.items():
            path = bundle.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        bundle.write_manifest({"kind": "huggingface", "id": "x/y"}, {"verdict": "pass", "score": float("nan")})
        bundle.commit()
    manifest = strict_loads((out / "manifest.json").read_text())
    assert manifest["format"] == "edgekit-bundle/1"
    assert manifest["source"] == {"kind": "huggingface", "id": "x/y"}
    assert manifest["verdict"] == "pass"
    assert manifest["score"] is None  # NaN cleaned
    assert isinstance(manifest["versions"], dict) and "numpy" in manifest["versions"]
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == set(contents)  # relative posix paths, manifest.json itself not listed
    for rel, data in contents.items():
        assert files[rel]["size"] == len(data)
        assert files[rel]["sha256"] == hashlib.sha256(data).hexdigest()
        assert (out / rel).read_bytes() == data  # paths are relative to OUT after the move
    assert [f["path"] for f in manifest["files"]] == sorted(files)


def test_manifest_rewritten_does_not_list_itself(tmp_path):
    with BundleWriter(tmp_path / "out") as bundle:
        (bundle.root / "a.txt").write_text("a")
        bundle.write_manifest({}, {})
        bundle.write_manifest({}, {})
        files = bundle.files()
    assert [f["path"] for f in files] == ["a.txt"]


def test_manifest_lists_nested_file_named_manifest(tmp_path):
    with BundleWriter(tmp_path / "out") as bundle:
        (bundle.folder("extra") / "manifest.json").write_text("{}")
        paths = [f["path"] for f in bundle.files()]
    assert paths == ["extra/manifest.json"]


# ---------------------------------------------------------------- JSON

def test_clean_json():
    data = {"a": float("nan"), "b": [1.0, float("inf"), -float("inf")], "c": (2, "x", None, True),
            3: {"d": 0.5}}
    cleaned = clean_json(data)
    assert cleaned == {"a": None, "b": [1.0, None, None], "c": [2, "x", None, True], "3": {"d": 0.5}}
    assert clean_json(float("nan")) is None
    assert clean_json(1.5) == 1.5


def test_clean_json_numpy_float64():
    assert clean_json(np.float64("nan")) is None
    assert clean_json([np.float64(2.0)]) == [2.0]


def test_write_json_is_strict(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"cos": float("nan"), "lat": [float("inf"), 1.25], "ok": True})
    text = path.read_text()
    assert text.endswith("\n")
    assert "NaN" not in text and "Infinity" not in text
    assert strict_loads(text) == {"cos": None, "lat": [None, 1.25], "ok": True}


def test_write_npz_is_byte_stable_and_loadable(tmp_path):
    import zipfile

    from edgekit.bundle import write_npz

    arrays = {"b": np.arange(6, dtype=np.int64).reshape(2, 3), "a": np.ones((1, 4), np.float32)}
    write_npz(tmp_path / "one.npz", arrays)
    write_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.npz") as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    loaded = np.load(tmp_path / "one.npz")
    assert np.array_equal(loaded["b"], arrays["b"]) and loaded["a"].dtype == np.float32


def test_two_compiles_give_the_same_artifacts(cnn_onnx, tmp_path):
    """Two build steps (two processes, as in a pipeline) give byte-identical artifacts and references."""
    import subprocess
    import sys

    profile = tmp_path / "quick.toml"
    profile.write_text('precision = "int8"\nfp32_candidate = false\n[budgets]\nmin_cosine = 0.9\n[data]\ncalibration_samples = 8\neval_samples = 4\n'
                       "[benchmark]\nmin_runs = 5\nmin_seconds = 0.1\nmax_seconds = 2.0\n")
    manifests = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-m", "edgekit.cli", "compile", str(cnn_onnx), "-t", "cpu", "-t", "intel-cpu",
                        "--shape", "input=1,3,32,32", "-p", str(profile), "-o", str(tmp_path / name), "-q",
                        "--no-cache"],  # else the second copies the first one's artifacts: identical by construction
                       check=True, capture_output=True)
        manifests.append(json.loads((tmp_path / name / "manifest.json").read_text()))
    first, second = ({f["path"]: f["sha256"] for f in m["files"]} for m in manifests)
    differing = sorted(p for p in first if first[p] != second.get(p))
    assert set(differing) <= {"report.json", "report.md"}
    assert manifests[0]["artifact_sha256"] == manifests[1]["artifact_sha256"]


def test_two_compiles_in_one_process_give_the_same_ir(bert_dir, quick_profile, tmp_path):
    """OpenVINO names generated nodes from a process-wide counter; edgekit renumbers them (save_ir), so a
    project build (several models, one process) writes the same IR as a build of one model alone."""
    import edgekit

    for name in ("a", "b"):
        edgekit.compile(str(bert_dir), targets=["intel-cpu"], profile=str(quick_profile), output=tmp_path / name,
                        no_bench=True, cache=False)
    for name in ("model.xml", "model.bin", "reference.npz"):
        assert (tmp_path / "a" / "intel-cpu" / name).read_bytes() == (tmp_path / "b" / "intel-cpu" / name).read_bytes(), name


def test_layer_names_renumbered_but_inputs_and_outputs_kept():
    from edgekit.stages.quantize_ov import normalise_layer_names

    xml = ('<layer id="0" name="input_ids" type="Parameter" version="opset1">'
           '<layer id="1" name="Constant_89854" type="Const" version="opset1">'
           '<layer id="2" name="Constant_271_1" type="Const" version="opset1">'
           '<layer id="3" name="/encoder/MatMul" type="MatMul" version="opset1">'
           '<layer id="4" name="Result_5" type="Result" version="opset1">')
    out = normalise_layer_names(xml)
    assert 'name="input_ids"' in out and 'name="/encoder/MatMul"' in out and 'name="Result_5"' in out
    assert 'name="Constant_0"' in out and 'name="Constant_1"' in out and "89854" not in out


# ---------------------------------------------------------------- reading a bundle back: RuntimeRecord, read_bundle


def test_runtime_records_are_read_and_written_back_byte_for_byte(cnn_bundle, tmp_path):
    from edgekit.bundle import read_bundle

    bundle = read_bundle(cnn_bundle)
    assert bundle.target_names() == ["cpu", "intel-cpu"]
    for name in bundle.target_names():
        target = bundle.target(name)
        assert target.artifact == cnn_bundle / name / target.record.artifact and target.files()[0] == target.artifact
        write_json(tmp_path / f"{name}.json", target.record.as_dict())
        assert (tmp_path / f"{name}.json").read_bytes() == (cnn_bundle / name / "runtime.json").read_bytes()


@pytest.mark.parametrize("text, fragment", [
    ("{ not json", "not readable JSON"),
    ("[1]", "not a runtime record"),
    ('{"target": "cpu", "runtime": "onnxruntime"}', "missing required key 'artifact'"),
    ('{"target": "cpu", "artifact": 3, "runtime": "onnxruntime"}', "'artifact' must be str, not 3"),
    ('{"target": "cpu", "artifact": "model.onnx", "runtime": "nope"}', "unknown runtime 'nope'"),
    ('{"target": "cpu", "artifact": "model.onnx", "runtime": "onnxruntime", "verified_with": 1}', "'verified_with' must be dict"),
])
def test_a_bad_runtime_record_is_one_usage_error_naming_the_file(tmp_path, text, fragment):
    from edgekit.runtimes import RuntimeRecord

    path = tmp_path / "runtime.json"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        RuntimeRecord.read(path)
    assert str(info.value).startswith(str(path)) and fragment in str(info.value) and "\n" not in str(info.value)


def test_length_buckets_are_the_runtimes_to_read():
    from edgekit.runtimes import RuntimeRecord

    ran = {"runtime": "openvino", "device": "CPU", "length_buckets": [16, 32], "length_bucket_inputs": ["input_ids"]}
    assert RuntimeRecord.of("intel-cpu", "model.xml", ran).length_buckets() == ((16, 32), ("input_ids",))
    absent = RuntimeRecord.of("intel-gpu", "model.xml", ran, {"runtime": "openvino", "device": "GPU"}, "no GPU here")
    assert absent.length_buckets() == ((16, 32), ("input_ids",)) and absent.measured is False
    assert list(absent.as_dict()) == ["target", "artifact", "runtime", "device", "measured", "not_measured", "verified_with"]
    assert RuntimeRecord.of("cpu", "model.onnx", {"runtime": "onnxruntime"}).length_buckets() == ((), ())
    with pytest.raises(UsageError, match="length_buckets"):
        RuntimeRecord.of("intel-cpu", "model.xml", {**ran, "length_buckets": "all"}).length_buckets()
