"""Bad input refused before any work, naming the file and the first bad entry (issue 17 §8-9)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.data import _open_image, read_csv, read_jsonl, read_lines
from edgekit.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hostile"))
from hostile_inputs import matmul_model  # noqa: E402


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_json_string_holding_a_line_separator_is_one_record(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one\u2028still one"}\n{"text": "two"}\n{"oops": 1}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 3: no 'text' field"):  # not line 4: nothing split at U+2028
        read_jsonl(path)
    path.write_text('{"text": "one\u2028still one"}\n{"text": "two"}\n', encoding="utf-8")
    texts, _, where = read_jsonl(path)
    assert texts == ["one\u2028still one", "two"] and where == ["line 1", "line 2"]


def test_csv_line_numbers_do_not_drift_after_a_line_separator(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"a\u2028b",x\nc,y,z\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 3: 3 fields"):
        read_csv(path)


@pytest.mark.parametrize("name, body, reader", [("e.txt", "", read_lines), ("b.txt", "  \n\n \n", read_lines),
                                                ("e.jsonl", "\n\n", read_jsonl), ("h.csv", "text,label\n", read_csv)])
def test_an_empty_or_blank_file_is_refused_by_name(tmp_path, name, body, reader):
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(UsageError, match="no samples: the file is empty or blank") as caught:
        reader(path)
    assert str(caught.value).startswith(str(path))


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63000
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")
    pixels = np.asarray(_open_image(tmp_path / "deep.png"))[..., 0]
    assert (pixels == 255).mean() < 0.05  # PIL's own conversion makes 98% of these pixels 255
    assert np.all(np.diff(pixels.ravel().astype(int)) >= 0) and pixels.max() == round(63000 / 65535 * 255)


@pytest.mark.parametrize("value", [np.nan, np.inf, 3e38])
def test_a_model_with_a_broken_weight_is_refused_naming_it(tmp_path, value):
    weights = np.ones((4, 4), dtype=np.float32)
    weights[2, 1] = value
    onnx.save(matmul_model(weights), str(tmp_path / "m.onnx"))
    line = _one_line(CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"),
                                               "--no-bench", "--progress", "none"]))
    assert "weight W[2, 1]" in line and "not a finite number" in line
    assert not (tmp_path / "out").exists()


def test_data_in_a_symlink_loop_is_refused(tmp_path):
    os.symlink(tmp_path / "b.txt", tmp_path / "a.txt")
    os.symlink(tmp_path / "a.txt", tmp_path / "b.txt")
    onnx.save(matmul_model(), str(tmp_path / "m.onnx"))
    line = _one_line(CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "a.txt"),
                                               "-o", str(tmp_path / "out"), "--no-bench", "--progress", "none"]))
    assert "a.txt" in line


def test_a_project_target_in_a_symlink_loop_is_refused(tmp_path):
    os.symlink(tmp_path / "y.toml", tmp_path / "x.toml")
    os.symlink(tmp_path / "x.toml", tmp_path / "y.toml")
    onnx.save(matmul_model(), str(tmp_path / "m.onnx"))
    (tmp_path / "edgekit.toml").write_text('[defaults]\ntargets = ["x.toml"]\n[[models]]\nname = "m"\nsource = "m.onnx"\n')
    result = CliRunner().invoke(main, ["compile", "--project", str(tmp_path / "edgekit.toml"), "--progress", "none"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "x.toml" in result.stderr


def test_an_embed_name_too_long_for_the_file_system_is_refused(cnn_bundle, tmp_path):
    line = _one_line(CliRunner().invoke(main, ["embed", str(cnn_bundle / "cpu"), "-f", "c", "-o", str(tmp_path / "fw"),
                                               "--name", "n" * 300]))
    assert "too long" in line
    assert not (tmp_path / "fw").exists() or not any((tmp_path / "fw").iterdir())
