"""A full disk, a read-only place, a path below a file, a name too long: the environment's fault, exit 2 with one
line naming the path (issue 17 §3, §8); a failed write in the output never touches the build cache."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit import cache as caches
from edgekit.cache import BuildCache
from edgekit.cli import main
from edgekit.errors import UsageError, environment_error


def _usage_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_full_output_disk_keeps_the_cache_entry_and_is_a_usage_error(tmp_path, monkeypatch):
    store = BuildCache(enabled=True, root=tmp_path / "cache")
    (tmp_path / "a.bin").write_bytes(b"x" * 4096)
    store.store("export", "k" * 64, {"model.onnx": tmp_path / "a.bin"})
    entry = store._entry("export", "k" * 64)
    assert entry.is_dir()
    real = shutil.copyfile

    def full(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(tmp_path / "out"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(caches.shutil, "copyfile", full)
    with pytest.raises(UsageError, match=r"no space left on the device \(the build needs about 0\.0 MB more there"):
        store.fetch("export", "k" * 64, tmp_path / "out")
    assert entry.is_dir() and (entry / "model.onnx").is_file()  # the entry is intact
    assert not any((tmp_path / "out").iterdir())  # and nothing half-copied is left in the output
    assert [e.outcome for e in store.events] == ["stored"]


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system"),
                                         (errno.ENOTDIR, "is a file, not a folder"),
                                         (errno.ENAMETOOLONG, "file name too long"), (errno.ELOOP, "link loop")])
def test_environment_failures_are_usage_errors_naming_the_path(code, words):
    try:
        try:
            raise OSError(code, os.strerror(code), "/some/where")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        error = environment_error(exc)
    assert isinstance(error, UsageError) and str(error).startswith("/some/where: ") and words in str(error)
    assert environment_error(ValueError("not the environment")) is None


def test_compile_to_a_full_disk_exits_2_and_keeps_the_previous_bundle(cnn_onnx, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["compile", str(cnn_onnx), "-t", "cpu", "--shape", "input=1,3,32,32", "--no-bench", "-o", str(out),
            "--eval-samples", "4", "--calibration-samples", "4", "--progress", "none"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code in (0, 1), first.output
    before = (out / "manifest.json").read_text()
    from edgekit import bundle

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(bundle, "write_json", full)
    line = _usage_line(CliRunner().invoke(main, args))
    assert "no space left on the device" in line
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_output_below_a_file_exits_2(cnn_onnx, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = _usage_line(CliRunner().invoke(main, ["compile", str(cnn_onnx), "-t", "cpu", "--shape", "input=1,3,32,32",
                                                 "--no-bench", "--progress", "none", "-o", str(tmp_path / "afile" / "sub")]))
    assert "afile" in line and "is a file, not a folder" in line


def _previous(cnn_onnx, tmp_path):
    out = tmp_path / "out"
    args = ["compile", str(cnn_onnx), "-t", "cpu", "--shape", "input=1,3,32,32", "--no-bench", "-o", str(out),
            "--eval-samples", "4", "--calibration-samples", "4", "--progress", "none"]
    assert CliRunner().invoke(main, args).exit_code in (0, 1)
    return out, args


def test_a_full_temp_disk_exits_2_and_keeps_the_previous_bundle(cnn_onnx, tmp_path, monkeypatch, private_build_cache):
    import onnx

    from edgekit.verify_bundle import verify

    out, args = _previous(cnn_onnx, tmp_path)
    before = (out / "manifest.json").read_text()

    def full(model, path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(onnx, "save", full)
    monkeypatch.setattr(onnx, "save_model", full)
    line = _usage_line(CliRunner().invoke(main, [*args, "--no-cache"]))
    assert "no space left on the device" in line
    assert (out / "manifest.json").read_text() == before and verify(out).ok
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name] == []


def test_a_read_only_output_location_exits_2(cnn_onnx, tmp_path, monkeypatch):
    from edgekit import bundle

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(bundle.tempfile, "mkdtemp", read_only)
    line = _usage_line(CliRunner().invoke(main, ["compile", str(cnn_onnx), "-t", "cpu", "--shape", "input=1,3,32,32",
                                                 "--no-bench", "--progress", "none", "-o", str(tmp_path / "out")]))
    assert "read-only file system" in line and str(tmp_path) in line
