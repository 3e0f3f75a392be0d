"""The bundle swap is recoverable at every instant (issue 17 §1) and dead builds' leftovers are removed (§2).

Faults are injected at each point of the swap (no luck with timing): before, between and after the renames of
the fallback, and after the atomic exchange; a process that dies between the renames is modelled by the state
it leaves (the old bundle aside, no OUT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import bundle as bundles
from edgekit.bundle import BundleWriter, read_bundle, replace_folder, restore_orphaned, stale_folders, sweep_stale


def _write(out: Path, text: str) -> None:
    with BundleWriter(out) as writer:
        (writer.folder("t") / "payload.txt").write_text(text)
        writer.write_manifest({"location": "test"}, {})
        writer.commit()


def _payload(out: Path) -> str:
    return (out / "t" / "payload.txt").read_text()


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and "lock" not in p.name)


class Interrupt(BaseException):
    """Stands in for KeyboardInterrupt / the SIGTERM handler's exception."""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def old_bundle(tmp_path) -> Path:
    out = tmp_path / "out"
    _write(out, "old")
    return out


@pytest.mark.parametrize("fail_at", [1, 2])
def test_fallback_swap_interrupted_at_either_rename_keeps_the_old_bundle(old_bundle, monkeypatch, fail_at):
    monkeypatch.setattr(bundles, "exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == fail_at:
            raise Interrupt()
        real_rename(src, dst)

    monkeypatch.setattr(bundles.os, "rename", rename)
    with pytest.raises(Interrupt):
        _write(old_bundle, "new")
    monkeypatch.setattr(bundles.os, "rename", real_rename)
    assert _payload(old_bundle) == "old"
    assert _leftovers(old_bundle) == []  # the new tree is removed, the old one is back under its name
    read_bundle(old_bundle)


def test_fallback_swap_interrupted_after_both_renames_has_the_new_bundle(old_bundle, monkeypatch):
    monkeypatch.setattr(bundles, "exchange", lambda a, b: False)

    def rmtree(path, ignore_errors=False):
        raise Interrupt()

    monkeypatch.setattr(bundles.shutil, "rmtree", rmtree)
    with pytest.raises(Interrupt):
        replace_folder(_new_tree(old_bundle, "new"), old_bundle)
    monkeypatch.undo()
    assert _payload(old_bundle) == "new"


def _new_tree(out: Path, text: str) -> Path:
    tree = out.parent / f".{out.name}.partial-{os.getpid()}-x"
    (tree / "t").mkdir(parents=True)
    (tree / "t" / "payload.txt").write_text(text)
    (tree / "manifest.json").write_text(json.dumps({"files": []}))
    return tree


def test_exchange_swaps_in_one_step_where_the_os_has_it(old_bundle, monkeypatch):
    tree = _new_tree(old_bundle, "new")
    if not bundles.exchange(tree, old_bundle):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert _payload(old_bundle) == "new" and (tree / "t" / "payload.txt").read_text() == "old"
    bundles.shutil.rmtree(tree)
    # interrupted after the exchange, before the old tree is removed: OUT is whole and new
    tree = _new_tree(old_bundle, "newer")
    monkeypatch.setattr(bundles.shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(Interrupt()))
    with pytest.raises(Interrupt):
        replace_folder(tree, old_bundle)
    monkeypatch.undo()
    assert _payload(old_bundle) == "newer"


def test_a_build_that_died_between_the_renames_is_put_back_by_a_reader_and_by_a_build(old_bundle, caplog):
    caplog.set_level("WARNING", logger="edgekit")
    aside = old_bundle.parent / f".{old_bundle.name}.old-{_dead_pid()}-abcd"
    os.rename(old_bundle, aside)
    read_bundle(old_bundle)  # verify, bench, embed and report read through this
    assert _payload(old_bundle) == "old" and not aside.exists()
    assert "put back the bundle" in caplog.text
    os.rename(old_bundle, aside)
    _write(old_bundle, "new")  # the next build restores first, then replaces it as usual
    assert _payload(old_bundle) == "new" and _leftovers(old_bundle) == []


def test_nothing_is_restored_over_an_existing_bundle(old_bundle):
    aside = old_bundle.parent / f".{old_bundle.name}.old-1-abcd"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    assert restore_orphaned(old_bundle) is None and aside.exists()


def test_leftovers_of_dead_builds_are_removed_by_the_next_build_and_reported(old_bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(bundles.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    dead = _dead_pid()
    partial = old_bundle.parent / f".{old_bundle.name}.partial-{dead}-abcd"
    work = tmp_path / "tmp" / f"edgekit-work-{dead}-abcd"
    live = tmp_path / "tmp" / f"edgekit-work-{os.getpid()}-abcd"  # a build running now: never touched
    foreign = tmp_path / "tmp" / "edgekit-work-notapid"  # not ours by name: never touched
    for folder in (partial, work, live, foreign):
        folder.mkdir()
        (folder / "blob").write_bytes(b"x" * 1000)
    assert set(stale_folders(old_bundle)) == {partial, work}
    from edgekit.cache import describe

    info = describe(tmp_path / "cache")["stale_temp"]
    assert info["folders"] == [str(work)] and info["bytes"] == 1000
    _write(old_bundle, "new")
    assert not partial.exists() and not work.exists() and live.exists() and foreign.exists()
    assert sweep_stale(old_bundle) == []
