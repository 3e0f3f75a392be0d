"""Whole results from the build cache: a `--no-bench` build whose every input is unchanged is not rebuilt.

Rules (cache rule 8):
1. A build's result is the bundle it writes. Without a benchmark (`--no-bench`) everything in it follows from its
   inputs: the model's content, the data's content, every option of the request, the targets' and the profile's
   settings, the thread count, and what every cache key holds (edgekit's code, the library versions, Python, the
   CPU model and instruction set). `key` is the digest of all of them; any change misses.
2. A build that measures latency is never reused whole: timings are of this run on this machine. Its steps are
   still reused (export, samples, artifacts), and verification reruns on them.
3. A module given from Python, `--no-cache` and a build with a failed target are neither read nor stored.
4. A stored result is the committed bundle's files under stage `result`, authenticated and hash-checked on the way
   out like any entry (cache rules 4, 5 and 7: it travels through the remote cache too). On a hit the bundle is
   written from it with this run's cache events in report.json and report.md, a note saying where the figures come
   from, and its manifest rewritten for them; `artifact_sha256` is the same as the stored build's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from . import cache
from .bundle import BundleWriter, write_json
from .cache import BuildCache
from .report import Report
from .request import Resolved

STAGE = "result"
LABEL = "whole result"
MANIFEST_OWN = ("format", "source", "versions", "files", "artifact_sha256")  # what write_manifest makes itself
NOT_INPUTS = ("model", "output", "force", "progress", "cache", "junit")  # where it goes and how, not what it is


def key(plan: Resolved, source, threads: int) -> str | None:
    """Rule 1: the digest of everything a `--no-bench` result follows from; None when it is never reused (rules 2, 3)."""
    request = plan.request
    if not request.cache or not request.no_bench or source.module is not None:
        return None
    from .stages.prepare import source_digest

    return cache.key(STAGE, {
        "env": cache.environment(), "source": source_digest(source), "location": source.location, "kind": source.kind,
        "task": source.task, "revision": source.revision,
        "data": cache.content_digest(plan.data) if plan.data is not None else None,
        "request": {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name not in NOT_INPUTS},
        "targets": [{k: v for k, v in dataclasses.asdict(t).items() if k != "source"} for t in plan.targets],
        "profile": {k: v for k, v in dataclasses.asdict(plan.profile).items() if k != "source"},
        "precisions": plan.precisions, "shapes": plan.shapes, "threads": threads})


def restore(store: BuildCache, digest: str | None, bundle: BundleWriter, progress) -> Report | None:
    """Rule 4: the stored result written into the bundle being built, as this run's report; None on a miss."""
    if digest is None:
        return None
    found = store.fetch(STAGE, digest, bundle.root, label=LABEL)
    if found is None:
        _empty(bundle.root)  # a damaged entry may have left folders behind
        return None
    try:
        report = Report.from_dict(json.loads((bundle.root / "report.json").read_text()))
        manifest = json.loads((bundle.root / "manifest.json").read_text())
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        store.discard(STAGE, digest, f"the stored report or manifest does not read back: {exc}", LABEL)
        _empty(bundle.root)
        return None
    stored = found.get("stored", "an earlier build")
    report.notes.append(f"reused whole from the build cache (entry {digest[:16]}, stored {stored}): the same model, "
                        "data, options, edgekit code, library versions, CPU and thread count; `--no-cache` builds and "
                        "verifies afresh")
    report.cache = store.summary()
    write_json(bundle.root / "report.json", report.to_dict())
    (bundle.root / "report.md").write_text(report.to_markdown())
    bundle.write_manifest(manifest["source"], {k: v for k, v in manifest.items() if k not in MANIFEST_OWN})
    progress.note(f"reused the whole result from the build cache (stored {stored}); nothing rebuilt")
    return report


def keep(store: BuildCache, digest: str | None, bundle: BundleWriter, report: Report) -> None:
    """Rule 4: the bundle about to be committed, stored whole (rule 3: not when a target failed)."""
    if digest is None or report.failed:
        return
    files = {p.relative_to(bundle.root).as_posix(): p for p in sorted(bundle.root.rglob("*")) if p.is_file()}
    store.store(STAGE, digest, files, {"stored": time.strftime("%Y-%m-%d %H:%M:%S %Z")}, label=LABEL)


def _empty(folder: Path) -> None:
    for item in folder.iterdir():
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)

