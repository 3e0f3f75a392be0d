"""The build cache: hits and misses, damaged entries, interrupted and failed writes, --no-cache, the CLI,
and the output lock that keeps two builds of one bundle apart."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

import edgekit
from edgekit import cache
from edgekit.cache import BuildCache
from edgekit.cli import main
from edgekit.verify_bundle import verify


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file of a bundle but the measurements and the manifest (which records them)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("report.json", "report.md", "manifest.json")}


def outcomes(report) -> dict[str, str]:
    return {e["label"]: e["outcome"] for e in report.cache["events"]}


# ---------------------------------------------------------------- the store itself

def test_store_then_fetch_gives_the_same_bytes_and_results(tmp_path):
    store = BuildCache(tmp_path / "c")
    src = tmp_path / "a.bin"
    src.write_bytes(b"\x00\x01weights" * 100)
    store.store("artifact", "k1", {"model.onnx": src}, {"notes": ["n"]})
    out = tmp_path / "out"
    assert store.fetch("artifact", "k1", out) == {"notes": ["n"]}
    assert (out / "model.onnx").read_bytes() == src.read_bytes()
    assert [e.outcome for e in store.events] == ["stored", "hit"]
    assert store.fetch("artifact", "other", tmp_path / "o2") is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "entry-json"])
def test_damaged_entry_is_detected_removed_and_a_miss(tmp_path, damage):
    store = BuildCache(tmp_path / "c")
    src = tmp_path / "a.bin"
    src.write_bytes(bytes(range(256)) * 64)
    store.store("artifact", "k1", {"model.onnx": src}, {})
    entry = tmp_path / "c" / cache.LAYOUT / "artifact" / "k1"
    target = entry / "model.onnx"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[1000] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "delete":
        target.unlink()
    else:
        (entry / cache.ENTRY).write_text("{not json")
    out = tmp_path / "out"
    assert store.fetch("artifact", "k1", out) is None
    assert store.events[-1].outcome == "damaged"
    assert not entry.exists(), "a damaged entry is removed so the rebuild can store a good one"
    assert not (out / "model.onnx").exists(), "nothing of a damaged entry is left for the build to use"


def test_disabled_cache_neither_reads_nor_writes(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    BuildCache(tmp_path / "c").store("samples", "k", {"s.npz": src})
    off = BuildCache(tmp_path / "c", enabled=False)
    assert off.fetch("samples", "k", tmp_path / "o") is None
    off.store("samples", "k2", {"s.npz": src})
    assert not (tmp_path / "c" / cache.LAYOUT / "samples" / "k2").exists()
    assert off.summary()["enabled"] is False


def test_a_store_that_fails_never_fails_the_build(tmp_path):
    root = tmp_path / "c"
    root.write_text("a file where the cache folder should be")
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    store = BuildCache(root)
    store.store("export", "k", {"model.onnx": src})
    assert store.events[-1].outcome == "store failed"
    assert store.fetch("export", "k", tmp_path / "o") is None


def test_second_store_of_a_key_keeps_the_first(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    one, two = BuildCache(tmp_path / "c"), BuildCache(tmp_path / "c")
    one.store("artifact", "k", {"m": a})
    two.store("artifact", "k", {"m": b})
    assert BuildCache(tmp_path / "c").fetch("artifact", "k", tmp_path / "o") == {}
    assert (tmp_path / "o" / "m").read_bytes() == b"first"
    assert not any((tmp_path / "c" / cache.LAYOUT / "tmp").iterdir())


def test_stale_partial_writes_are_swept(tmp_path):
    tmp = tmp_path / "c" / cache.LAYOUT / "tmp"
    stale, fresh = tmp / "artifact-stale", tmp / "artifact-fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half")
    old = os.stat(stale).st_mtime - cache.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    BuildCache(tmp_path / "c")
    assert not stale.exists() and fresh.exists(), "a write in progress elsewhere is left alone"


def test_keys_are_stable_and_sensitive():
    parts = {"model": "abc", "profile": {"seed": 0, "samples": 64}, "path": Path("/x")}
    assert cache.key("samples", parts) == cache.key("samples", dict(reversed(list(parts.items()))))
    assert cache.key("samples", parts) != cache.key("samples", {**parts, "profile": {"seed": 1, "samples": 64}})
    assert cache.key("samples", parts) != cache.key("artifact", parts)


def test_default_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_root() == tmp_path / "xdg" / "edgekit"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.default_root() == tmp_path / "mine"


# ---------------------------------------------------------------- compiles

@pytest.fixture
def compile_bert(bert_dir, quick_profile, tmp_path):
    def run(out: str, **options):
        return edgekit.compile(str(bert_dir), targets=["cpu", "intel-cpu"], profile=str(quick_profile),
                               output=tmp_path / out, no_bench=True, **options)
    return run


def test_warm_rebuild_reuses_the_whole_result_and_writes_the_same_bundle(compile_bert, tmp_path):
    cold = compile_bert("cold")
    assert set(outcomes(cold).values()) == {"stored"}
    assert set(outcomes(cold)) == {"export", "samples", "cpu artifact", "intel-cpu artifact"}
    warm = compile_bert("warm")
    assert outcomes(warm) == {"whole result": "hit"}  # cache rule 8: a --no-bench build with nothing changed
    assert files_of(tmp_path / "cold") == files_of(tmp_path / "warm")
    manifests = [json.loads((tmp_path / b / "manifest.json").read_text()) for b in ("cold", "warm")]
    assert manifests[0]["artifact_sha256"] == manifests[1]["artifact_sha256"]
    assert [t.to_dict()["accuracy"] for t in warm.targets] == [t.to_dict()["accuracy"] for t in cold.targets]
    written = json.loads((tmp_path / "warm" / "report.json").read_text())
    assert written["cache"]["events"][0]["outcome"] == "hit" and any("reused whole" in n for n in written["notes"])
    assert "build cache: reused whole result" in (tmp_path / "warm" / "report.md").read_text()
    assert verify(tmp_path / "warm").ok  # the manifest was rewritten for the new report: the bundle checks out


def test_without_the_whole_result_every_step_is_reused_and_verification_rerun(compile_bert, private_build_cache, tmp_path):
    cold = compile_bert("cold")
    for entry in (private_build_cache / cache.LAYOUT / "result").iterdir():
        (entry / "entry.json").write_text("{}")  # a damaged result entry: the build falls back on its steps
    warm = compile_bert("warm")
    assert outcomes(warm) == {"whole result": "damaged", "export": "hit", "samples": "hit", "cpu artifact": "hit",
                              "intel-cpu artifact": "hit"}
    assert files_of(tmp_path / "cold") == files_of(tmp_path / "warm")
    for c, w in zip(cold.targets, warm.targets):  # verification reran on the reused artifacts
        assert w.accuracy.cosine_min == pytest.approx(c.accuracy.cosine_min, abs=1e-6)
    assert "build cache: reused export, samples, cpu artifact, intel-cpu artifact" in (tmp_path / "warm" / "report.md").read_text()


def test_changed_option_misses_what_it_determines(compile_bert):
    compile_bert("a")
    changed = compile_bert("b", overrides={"seed": 1})
    assert outcomes(changed) == {"export": "hit", "samples": "stored", "cpu artifact": "stored", "intel-cpu artifact": "stored"}


def test_a_result_is_reused_only_for_its_own_options(compile_bert, private_build_cache):
    compile_bert("a")
    assert len(list((private_build_cache / cache.LAYOUT / "result").iterdir())) == 1
    other_threads = compile_bert("b", threads=1)
    assert "whole result" not in outcomes(other_threads)
    assert len(list((private_build_cache / cache.LAYOUT / "result").iterdir())) == 2


def test_corrupted_cached_artifact_is_rebuilt_not_trusted(compile_bert, private_build_cache, tmp_path):
    compile_bert("cold")
    stored = [*(private_build_cache / cache.LAYOUT / "artifact").glob("*/model.onnx"),
              *(private_build_cache / cache.LAYOUT / "result").glob("*/cpu/model.onnx")]
    assert len(stored) == 2  # the cpu artifact's entry and the whole result's copy of it
    for model in stored:
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    again = compile_bert("again")
    assert outcomes(again)["cpu artifact"] == "stored" and outcomes(again)["whole result"] == "damaged"
    assert [e["stage"] for e in again.cache["events"] if e["outcome"] == "damaged"] == ["result", "artifact"]
    assert files_of(tmp_path / "cold") == files_of(tmp_path / "again")


def test_no_cache_writes_nothing(compile_bert, private_build_cache):
    report = compile_bert("off", cache=False)
    assert report.cache["enabled"] is False and report.cache["events"] == []
    assert not (private_build_cache / cache.LAYOUT).exists()


def test_warm_rebuild_with_benchmark_loads_the_original(bert_dir, quick_profile, tmp_path):
    for out in ("one", "two"):
        report = edgekit.compile(str(bert_dir), targets=["cpu"], profile=str(quick_profile), output=tmp_path / out)
    assert outcomes(report)["export"] == "hit"
    assert report.original_latency is not None and report.original_latency.p50 > 0
    assert report.original["runtime"] == "pytorch" and report.original["settings"]["runtime"] == "pytorch"
    assert report.targets[0].speedup_p50 > 0


def test_onnx_source_is_cached_too(cnn_onnx, quick_profile, tmp_path):
    def run(out):
        return edgekit.compile(str(cnn_onnx), targets=["cpu"], shapes=["input=1,3,32,32"], profile=str(quick_profile),
                               output=tmp_path / out, no_bench=True)
    run("a")
    assert outcomes(run("b")) == {"whole result": "hit"}
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")


def test_interrupted_build_leaves_no_partial_entry(bert_dir, quick_profile, tmp_path, private_build_cache, monkeypatch):
    from edgekit.stages import quantize_ort

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize_ort, "quantize_static_qdq", interrupt)
    with pytest.raises(KeyboardInterrupt):
        edgekit.compile(str(bert_dir), targets=["cpu"], profile=str(quick_profile), output=tmp_path / "out", no_bench=True)
    assert not (tmp_path / "out").exists()
    stages = {p.parent.parent.name for p in (private_build_cache / cache.LAYOUT).glob("*/*/entry.json")}
    assert stages == {"export", "samples"}, "finished steps are kept; the interrupted one left nothing"
    for entry in (private_build_cache / cache.LAYOUT).glob("*/*/entry.json"):
        record = json.loads(entry.read_text())
        for name, want in record["files"].items():
            assert (entry.parent / name).stat().st_size == want["size"]


# ---------------------------------------------------------------- CLI and the output lock

def test_cache_info_and_clear(compile_bert, private_build_cache):
    compile_bert("x")
    runner = CliRunner()
    info = json.loads(runner.invoke(main, ["cache", "info", "--json"]).output)
    assert info["dir"] == str(private_build_cache)
    assert info["stages"]["artifact"]["entries"] == 2 and info["bytes"] > 0
    result = runner.invoke(main, ["cache", "clear"])
    assert result.exit_code == 0 and "MB freed" in result.stderr
    assert json.loads(runner.invoke(main, ["cache", "info", "--json"]).output)["bytes"] == 0


def test_cli_no_cache_and_no_bench(cnn_onnx, quick_profile, tmp_path, private_build_cache):
    result = CliRunner().invoke(main, ["compile", "-q", str(cnn_onnx), "--shape", "input=1,3,32,32", "--profile",
                                       str(quick_profile), "-o", str(tmp_path / "out"), "--no-cache", "--no-bench"])
    assert result.exit_code == 0, result.output
    assert "build cache: off (--no-cache)" in result.output
    assert "not measured" in result.output
    assert not (private_build_cache / cache.LAYOUT).exists()


def test_second_build_of_the_same_output_is_refused(cnn_onnx, tmp_path):
    out = tmp_path / "out"
    lock = tmp_path / ".out.edgekit-lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242")
        result = CliRunner().invoke(main, ["compile", "-q", str(cnn_onnx), "--shape", "input=1,3,32,32", "-o", str(out)])
        assert_usage_error(result, "another edgekit build is writing this bundle now (pid 4242)")
        assert not out.exists()
    finally:
        os.close(fd)


def test_lock_is_released_after_a_build(cnn_onnx, quick_profile, tmp_path):
    for _ in range(2):
        report = edgekit.compile(str(cnn_onnx), targets=["cpu"], shapes=["input=1,3,32,32"], profile=str(quick_profile),
                                 output=tmp_path / "out", no_bench=True)
        assert report.bundle == tmp_path / "out"
    assert not (tmp_path / ".out.edgekit-lock").exists()


def test_require_measured_with_no_bench_is_a_usage_error(cnn_onnx, tmp_path):
    result = CliRunner().invoke(main, ["compile", "-q", str(cnn_onnx), "--shape", "input=1,3,32,32", "--no-bench",
                                       "--require-measured", "-o", str(tmp_path / "out")])
    assert_usage_error(result, "--require-measured needs the benchmark")


def test_environment_holds_a_digest_of_edgekit_code():
    """Changed edgekit code under the same version never reuses entries the old code built."""
    from edgekit import cache

    env = cache.environment()
    assert len(env["code"]) == 64 and env["code"] == cache.code_digest()
    cache.code_digest.cache_clear()
    assert cache.code_digest() == env["code"]  # stable for the same files
