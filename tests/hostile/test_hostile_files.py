"""Hostile data files and output locations: image and line bombs, -o at /, home, or other people's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error
from hostile_inputs import png_header_bomb, snapshot

from edgekit.bundle import FORCED_SUBFOLDER, BundleWriter, output_folder
from edgekit.cli import main
from edgekit.data import read_lines
from edgekit.errors import UsageError


def run(*args: str):
    return CliRunner().invoke(main, ["compile", "-q", *args])


# ---------------------------------------------------------------- images

def small_images(folder: Path, count: int = 3) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (32, 32), (i * 40, 80, 120)).save(folder / f"ok_{i}.png")
    return folder


def test_decompression_bomb_png_refused(cnn_onnx, tmp_path):
    images = small_images(tmp_path / "images")
    png_header_bomb(images / "bomb.png", 100_000, 100_000)
    before = snapshot(tmp_path)
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "--data", str(images), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "bomb.png")
    assert snapshot(tmp_path) == before


def test_image_pixel_limit_is_configurable(cnn_onnx, tmp_path, monkeypatch):
    images = small_images(tmp_path / "images")
    monkeypatch.setenv("EDGEKIT_MAX_IMAGE_PIXELS", "1000")
    result = run(str(cnn_onnx), "--shape", "input=1,3,32,32", "--data", str(images), "-o", str(tmp_path / "out"))
    assert_usage_error(result, "ok_", "32x32 = 1,024 pixels", "limit of 1,000")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- text lines

def test_long_line_refused_naming_the_line(tmp_path):
    data = tmp_path / "lines.txt"
    data.write_bytes(b"first sample\nsecond sample\n" + b"x" * ((1 << 20) + 10) + b"\nlast\n")
    with pytest.raises(UsageError, match=r"line 3 is longer than 1,048,576 bytes"):
        read_lines(data)


def test_line_of_exactly_the_limit_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_MAX_LINE_BYTES", "10")
    data = tmp_path / "lines.txt"
    data.write_bytes(b"123456789\n1234567890\n12345")
    assert read_lines(data) == ["123456789", "1234567890", "12345"]


@pytest.mark.parametrize("name, body", [
    ("data.txt", "short one\nshort two\n" + "y" * 300 + "\n"),
    ("data.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": "' + "y" * 300 + '"}\n'),
    ("data.csv", "text\na\nb\n" + "y" * 300 + "\n"),
])
def test_long_line_refused_through_the_cli(bert_dir, tmp_path, monkeypatch, name, body):
    monkeypatch.setenv("EDGEKIT_MAX_LINE_BYTES", "200")
    data = tmp_path / name
    data.write_text(body)
    before = snapshot(tmp_path)
    result = run(str(bert_dir), "--data", str(data), "-o", str(tmp_path / "out"))
    line = 3 if name != "data.csv" else 4
    assert_usage_error(result, name, f"line {line} is longer than 200 bytes")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- output location

def test_output_at_root_refused(cnn_onnx, tmp_path):
    assert_usage_error(run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-o", "/"), "-o /", "file system root")


def test_output_at_home_refused(cnn_onnx, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "notes.txt").parent.mkdir()
    (home / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    before = snapshot(tmp_path)
    assert_usage_error(run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-o", str(home)), "home folder")
    assert snapshot(tmp_path) == before


def test_bundle_with_foreign_files_refused(cnn_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"files": [{"path": "cpu/model.onnx"}]}))
    (out / "cpu").mkdir()
    (out / "cpu" / "model.onnx").write_text("x")
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    assert_usage_error(run(str(cnn_onnx), "--shape", "input=1,3,32,32", "-o", str(out)), "thesis.tex", "did not write")
    assert snapshot(tmp_path) == before


def test_force_writes_into_a_subfolder_and_deletes_nothing(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an edgekit bundle"):
        output_folder(out)
    assert output_folder(out, force=True) == out / FORCED_SUBFOLDER
    for _ in range(2):  # a second forced build replaces only the bundle edgekit wrote
        with BundleWriter(out, force=True) as bundle:
            (bundle.root / "a.txt").write_text("a")
            bundle.write_manifest({}, {})
            assert bundle.commit() == (out / FORCED_SUBFOLDER).resolve()
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == [FORCED_SUBFOLDER, "notes.txt"]


def test_force_never_turns_a_file_into_a_folder(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("mine")
    with pytest.raises(UsageError, match="is a file"):
        output_folder(target, force=True)
