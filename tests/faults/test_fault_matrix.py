"""The fault matrix (issue 17): a real `edgekit compile` process signalled at each stage, two builds sharing one
cache at once. After each: the previous bundle verifies, nothing is left over once the next build ran, the cache's
entries are sound, and the exit code is the documented one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cache import BuildCache
from edgekit.verify_bundle import verify

# When to send the signal: the first progress event (JSON, on stderr) that matches.
STAGES = {
    "prepare": lambda e: e.get("event") == "stage" and e["stage"].startswith("run the original"),
    "quantise": lambda e: e.get("event") == "step" and e.get("step") == "quantise QDQ",
    "verify": lambda e: e.get("event") == "stage" and e["stage"].endswith("verify against the original"),
    "benchmark": lambda e: e.get("event") == "stage" and e["stage"].startswith("benchmark the original"),
}


def _command(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgekit.cli", "compile", str(model), "-t", "cpu", "--shape", "input=1,3,32,32",
            "-o", str(out), "--progress", "json", "--eval-samples", "8", "--calibration-samples", "8", *extra]


def _env(tmp: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp), "EDGEKIT_CACHE_DIR": str(cache)}


def _signal_at(command: list[str], env: dict, stage: str, signum: int) -> int:
    """Run `command`, send `signum` when `stage` begins; its exit status (negative: killed by a signal)."""
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    sent = False
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not sent and STAGES[stage](event):
            proc.send_signal(signum)
            sent = True
    proc.wait(timeout=120)
    assert sent, f"the build never reached {stage}"
    return proc.returncode


@pytest.fixture(scope="module")
def previous(tmp_path_factory, cnn_onnx) -> Path:
    root = tmp_path_factory.mktemp("previous")
    out = root / "out"
    subprocess.run(_command(cnn_onnx, out, "--no-cache", "--no-bench"), check=True, capture_output=True,
                   env=_env(root, root / "cache"))
    return out


def _leftovers(out: Path, tmp: Path) -> list[str]:
    beside = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and "lock" not in p.name]
    return beside + [p.name for p in tmp.iterdir() if p.name.startswith("edgekit-work-")]


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_a_signal_at_any_stage_keeps_the_previous_bundle(previous, cnn_onnx, tmp_path, stage, signum):
    out, tmp, cache = tmp_path / "out", tmp_path / "tmp", tmp_path / "cache"
    shutil.copytree(previous, out)
    tmp.mkdir()
    before = (out / "manifest.json").read_text()
    status = _signal_at(_command(cnn_onnx, out), _env(tmp, cache), stage, signum)
    assert status == (-signal.SIGKILL if signum == signal.SIGKILL else 130)
    assert (out / "manifest.json").read_text() == before and verify(out).ok
    if signum != signal.SIGKILL:
        assert _leftovers(out, tmp) == []  # an interrupted build cleans up after itself
    # the next build (another process) removes what a killed one left, and builds
    done = subprocess.run(_command(cnn_onnx, out, "--no-bench"), capture_output=True, env=_env(tmp, cache), text=True)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert _leftovers(out, tmp) == [] and verify(out).ok
    _assert_cache_sound(cache)


def _assert_cache_sound(cache: Path) -> None:
    store = BuildCache(root=cache)  # it sweeps the temporary stores of dead builds
    assert not any((cache / "v1" / "tmp").iterdir()) if (cache / "v1" / "tmp").is_dir() else True
    for entry in sorted((cache / "v1").glob("*/*/entry.json")):
        stage, key = entry.parent.parent.name, entry.parent.name
        assert store.fetch(stage, key, cache.parent / "fetched" / stage / key) is not None, f"{stage}/{key}"
    assert all(e.outcome == "hit" for e in store.events)


def test_two_builds_sharing_one_cache_at_once(cnn_onnx, tmp_path):
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    procs = [subprocess.Popen(_command(cnn_onnx, tmp_path / name, "--no-bench"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=_env(tmp, cache), text=True) for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), err[-2000:]
    a, b = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("a", "b"))
    assert a["artifact_sha256"] == b["artifact_sha256"]
    assert verify(tmp_path / "a").ok and verify(tmp_path / "b").ok
    _assert_cache_sound(cache)
    assert [p.name for p in tmp.iterdir() if p.name.startswith("edgekit-")] == []  # (runtimes keep files of their own)
