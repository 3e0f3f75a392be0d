"""The verdict never rests on cache content alone (issue 17 §4): entries are authenticated with a key the cache
does not hold, and the original is run again on cached evaluation samples."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest

import edgekit
from edgekit import cache as caches
from edgekit.cache import BuildCache, entry_mac, key_file


def _store(tmp_path, **results):
    store = BuildCache(enabled=True, root=tmp_path / "cache")
    (tmp_path / "a.bin").write_bytes(b"weights" * 100)
    store.store("export", "k" * 64, {"model.onnx": tmp_path / "a.bin"}, results or {"export_check_max_abs_error": 1e-6})
    return store, store._entry("export", "k" * 64)


def test_the_key_lives_outside_the_cache_private_to_the_user(tmp_path):
    _store(tmp_path)
    path = key_file()
    assert path.is_file() and len(path.read_bytes()) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "cache") not in path.parents


def test_edited_results_are_not_trusted(tmp_path):
    store, entry = _store(tmp_path)
    record = json.loads((entry / "entry.json").read_text())
    record["results"]["export_check_max_abs_error"] = 0.0
    (entry / "entry.json").write_text(json.dumps(record))
    assert store.fetch("export", "k" * 64, tmp_path / "out") is None
    assert store.events[-1].outcome == "damaged" and "not authenticated" in store.events[-1].detail
    assert not entry.exists()


def test_a_consistent_rewrite_without_the_key_is_not_trusted(tmp_path):
    """Files and their hashes rewritten together, the HMAC recomputed with a guessed key: refused."""
    store, entry = _store(tmp_path)
    (entry / "model.onnx").write_bytes(b"poisoned" * 100)
    record = json.loads((entry / "entry.json").read_text())
    data = (entry / "model.onnx").read_bytes()
    record["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    record["mac"] = entry_mac(b"not the key", record)
    (entry / "entry.json").write_text(json.dumps(record))
    assert store.fetch("export", "k" * 64, tmp_path / "out") is None
    assert "not authenticated" in store.events[-1].detail


def test_machines_sharing_a_cache_share_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_KEY", "ci-secret")
    store, _ = _store(tmp_path)
    assert store.fetch("export", "k" * 64, tmp_path / "out") is not None
    monkeypatch.setenv("EDGEKIT_CACHE_KEY", "another-secret")
    other = BuildCache(enabled=True, root=tmp_path / "cache")
    assert other.fetch("export", "k" * 64, tmp_path / "out2") is None
    assert "not authenticated" in other.events[-1].detail


def test_no_key_no_cache(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "config-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))
    store, entry = _store(tmp_path)
    assert not entry.exists() and [e.outcome for e in store.events] == ["no key"]
    assert "build cache not used: no key" in caplog.text


def test_cached_original_outputs_are_checked_by_running_the_original_again(cnn_onnx, quick_profile, tmp_path,
                                                                              private_build_cache, caplog):
    caplog.set_level("WARNING", logger="edgekit")
    options = dict(targets=["cpu"], shapes=["input=1,3,32,32"], profile=str(quick_profile), no_bench=True)
    edgekit.compile(str(cnn_onnx), output=tmp_path / "a", **options)
    shutil.rmtree(private_build_cache / "v1" / "result")  # not the whole result (cache rule 8): its steps
    warm = edgekit.compile(str(cnn_onnx), output=tmp_path / "b", **options)
    assert any("run again on 4 evaluation samples and gave them again" in n for n in warm.notes)
    # someone who holds the key (or a bug) stores false outputs of the original: the rerun catches them
    (entry,) = (private_build_cache / "v1" / "samples").iterdir()
    path = entry / "samples.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for name in arrays:
        if name.startswith("reference|"):
            arrays[name] = np.zeros_like(arrays[name])
    np.savez(path, **arrays)
    record = json.loads((entry / "entry.json").read_text())
    data = path.read_bytes()
    record["files"]["samples.npz"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    record["mac"] = entry_mac(caches.authentication_key(), record)
    (entry / "entry.json").write_text(json.dumps(record))
    shutil.rmtree(private_build_cache / "v1" / "result", ignore_errors=True)
    report = edgekit.compile(str(cnn_onnx), output=tmp_path / "c", **options)
    assert "the original, run again, disagrees" in caplog.text
    assert not any("gave them again" in n for n in report.notes)
    assert report.targets[0].accuracy.cosine_min > 0.9  # judged against the original's real outputs


def test_two_stores_racing_the_rename_keep_the_first_whole(tmp_path, monkeypatch):
    """Issue 17: the other build's rename lands between this store's check and its own rename."""
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    one, two = BuildCache(root=tmp_path / "c"), BuildCache(root=tmp_path / "c")
    real_rename = os.rename

    def rename(src, dst):
        if str(dst).endswith("/artifact/k") and not os.path.exists(dst):
            monkeypatch.setattr(caches.os, "rename", real_rename)
            one.store("artifact", "k", {"m": a})  # the racing build wins, just before us
        return real_rename(src, dst)

    monkeypatch.setattr(caches.os, "rename", rename)
    two.store("artifact", "k", {"m": b})
    assert [e.outcome for e in one.events] == ["stored"] and [e.outcome for e in two.events] == []
    assert BuildCache(root=tmp_path / "c").fetch("artifact", "k", tmp_path / "o") == {}
    assert (tmp_path / "o" / "m").read_bytes() == b"first"
    assert not any((tmp_path / "c" / caches.LAYOUT / "tmp").iterdir())


@pytest.mark.parametrize("fail_at", ["copy", "record", "rename"])
def test_a_store_interrupted_at_any_point_leaves_no_entry_and_no_temp(tmp_path, monkeypatch, fail_at):
    (tmp_path / "a.bin").write_bytes(b"x" * 1000)
    (tmp_path / "b.bin").write_bytes(b"y" * 1000)
    store = BuildCache(root=tmp_path / "c")
    targets = {"copy": (caches.shutil, "copyfile"), "record": (caches, "entry_mac"), "rename": (caches.os, "rename")}
    module, name = targets[fail_at]
    real, calls = getattr(module, name), []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if fail_at != "copy" or len(calls) == 2:  # the copy: after the first of two files
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.store("artifact", "k", {"m1": tmp_path / "a.bin", "m2": tmp_path / "b.bin"})
    monkeypatch.undo()
    assert not (tmp_path / "c" / caches.LAYOUT / "artifact" / "k").exists()
    assert not any((tmp_path / "c" / caches.LAYOUT / "tmp").iterdir())
