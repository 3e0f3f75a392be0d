"""`verify`: is a bundle intact, and does each artifact still compute what it computed at build time?

Rules:
1. A bundle is a folder with a readable `manifest.json`; anything else is a usage error (exit 2). It is
   read by the one bundle reader (bundle.read_bundle), as bench, embed and report read it.
2. Every path the manifest lists, and the artifact each listed target's `runtime.json` names, is relative
   and stays inside the bundle: an absolute path, a `..` part or a symlink resolving outside is a usage
   error (exit 2), never followed. These are checked before any file is hashed.
3. Every listed file exists with the listed size and sha256, in manifest order; the first that does not
   is the mismatch (exit 1), named with what differs. The manifest's `artifact_sha256` is recomputed from
   its file list: a list edited to match a changed file no longer matches the digest the build recorded.
4. At build time each target stores `reference.npz` (one input feed and the artifact's own outputs on it)
   and `reference.json` (the tolerance and where it ran). `verify` loads each artifact with its
   `runtime.json` settings — on the verify device (the CPU) when the target's device is not here, as
   compile does — runs the stored input and compares each output: cosine ≥ `min_cosine` and max absolute
   error ≤ `max_abs_error`. A target without a stored reference fails: a check that cannot run is not a pass.
5. Nothing depends on where the bundle lies: paths are relative, so a moved bundle verifies.
6. An integer output (a generative model's greedy tokens: the stored continuation) must match exactly; the
   tolerance applies to float outputs, and is scaled by them only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import RUNTIME_RECORD, Bundle, BundleTarget, digest_edited, read_bundle, write_json, write_npz
from .errors import EdgekitError, UsageError
from .runtimes import Feed, Session
from .safety import inside_bundle
from .source import sha256_file

log = logging.getLogger(__name__)

REFERENCE_NPZ = "reference.npz"
REFERENCE_JSON = "reference.json"
MIN_COSINE = 0.999
RELATIVE_ABS_ERROR = 0.02  # of the largest output magnitude: room for another CPU's kernels, not for a different model


@dataclass
class VerifyResult:
    bundle: Path
    files: int = 0
    targets: list[str] = field(default_factory=list)  # "name: runtime device, cosine x, max abs error y"
    mismatch: str | None = None  # the first one, naming the file and what differs

    @property
    def ok(self) -> bool:
        return self.mismatch is None


def write_reference(out_dir: Path, session: Session, feed: Feed, device: str, provider: str) -> None:
    """Store `feed` and the artifact's own outputs on it, with the tolerance `verify` applies."""
    outputs = session.run(feed)
    arrays = {f"input:{k}": np.asarray(v) for k, v in feed.items()}
    arrays.update({f"output:{n}": np.asarray(o) for n, o in zip(session.output_names, outputs)})
    write_npz(out_dir / REFERENCE_NPZ, arrays)
    scale = max((float(np.max(np.abs(np.asarray(o, dtype=np.float64)), initial=0.0)) for o in outputs
                 if not np.issubdtype(np.asarray(o).dtype, np.integer)), default=0.0)
    write_json(out_dir / REFERENCE_JSON, {
        "inputs": list(feed), "outputs": list(session.output_names),
        "tolerance": {"min_cosine": MIN_COSINE, "max_abs_error": RELATIVE_ABS_ERROR * scale + 1e-4},
        "recorded_on": {"runtime": session.runtime, "device": device, "execution_provider": provider},
    })


def check_files(root: Path, manifest: dict[str, Any]) -> tuple[int, str | None]:
    """(files checked, the first mismatch or None). Every path is checked for escapes before any is hashed."""
    entries = manifest["files"]
    paths = [inside_bundle(root, e.get("path") if isinstance(e, dict) else None) for e in entries]
    for entry, path in zip(entries, paths):
        name = entry["path"]
        if not path.is_file():
            return len(entries), f"{name}: missing"
        size = path.stat().st_size
        if size != entry.get("size"):
            return len(entries), f"{name}: size {size} bytes, the manifest says {entry.get('size')}"
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            return len(entries), f"{name}: sha256 {digest[:12]}…, the manifest says {str(entry.get('sha256'))[:12]}…"
    if digest_edited(manifest):
        return len(entries), ("manifest.json: artifact_sha256 does not match the manifest's own file list "
                              "(the list was edited after the build)")
    return len(entries), None


def check_target(target: BundleTarget, threads: int = 1) -> tuple[str, str | None]:
    """(a one-line summary, the first mismatch or None) for one target of a bundle."""
    from .stages.verify import cosine

    name, folder, artifact, record = target.name, target.folder, target.artifact, target.record
    npz_path, tol_path = folder / REFERENCE_NPZ, folder / REFERENCE_JSON
    if not npz_path.is_file() or not tol_path.is_file():
        return name, f"{name}/{REFERENCE_NPZ}: no reference stored (bundle built before edgekit stored one); recompile it"
    used = record.load_settings(record.availability().present)
    device = used.get("device", "CPU")
    try:
        session = record.open(artifact, threads, used)
    except EdgekitError as exc:
        return name, f"{name}/{artifact.name}: does not load in {record.runtime} on {device}: {exc}"
    tolerance = json.loads(tol_path.read_text())["tolerance"]
    with np.load(npz_path, allow_pickle=False) as data:
        feed = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("input:")}
        expected = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("output:")}
    try:
        got = dict(zip(session.output_names, session.run(feed)))
    except Exception as exc:
        return name, f"{name}/{artifact.name}: the stored reference input does not run: {str(exc).splitlines()[0]}"
    worst_cos, worst_err = 1.0, 0.0
    for out, want in expected.items():
        if out not in got:
            return name, f"{name}/{REFERENCE_NPZ}: output {out} is not an output of {artifact.name}"
        have = np.asarray(got[out])
        if have.shape != want.shape:
            return name, f"{name}/{artifact.name}: output {out} has shape {list(have.shape)}, the reference {list(want.shape)}"
        if np.issubdtype(want.dtype, np.integer):  # rule 6: token ids, classes: the same or not
            if not np.array_equal(want, have):
                first = int(np.flatnonzero(want.ravel() != have.ravel())[0])
                return name, (f"{name}/{artifact.name}: output {out} differs from {name}/{REFERENCE_NPZ} at position {first}: "
                              f"{int(have.ravel()[first])}, the reference {int(want.ravel()[first])} (integer outputs must match exactly)")
            continue
        cos = cosine(want, have)
        err = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)), initial=0.0))
        if not np.isfinite(err):
            err = float("inf")
        if cos < tolerance["min_cosine"] or err > tolerance["max_abs_error"]:
            return name, (f"{name}/{artifact.name}: output {out} differs from {name}/{REFERENCE_NPZ}: cosine {cos:.6f} "
                          f"(min {tolerance['min_cosine']}), max abs error {err:.3g} (max {tolerance['max_abs_error']:.3g})")
        worst_cos, worst_err = min(worst_cos, cos), max(worst_err, err)
    return f"{name}: {record.runtime} {device}, cosine {worst_cos:.6f}, max abs error {worst_err:.3g}", None


def _targets(bundle: Bundle) -> list[BundleTarget | str]:
    """Each target the manifest lists, read and its paths checked before any file is hashed (rule 2); the name
    of one without a runtime.json (a mismatch, rule 3)."""
    names = bundle.manifest.get("targets")
    if not isinstance(names, list):
        return []
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise UsageError(f"{bundle.root / 'manifest.json'}: target name '{name}' is not a folder of the bundle")
    return [bundle.target(name) if (bundle.root / name / RUNTIME_RECORD).is_file() else name for name in names]


def verify(bundle: str | Path, threads: int = 1) -> VerifyResult:
    """Check a bundle's files, then run each target's stored reference. Raises UsageError for a non-bundle."""
    read = read_bundle(bundle)
    result = VerifyResult(read.root)
    targets = _targets(read)
    result.files, result.mismatch = check_files(read.root, read.manifest)
    if result.mismatch:
        return result
    if not targets:
        result.mismatch = "manifest.json: lists no targets"
        return result
    for target in targets:
        if isinstance(target, str):
            result.mismatch = f"{target}/{RUNTIME_RECORD}: missing"
            return result
        summary, result.mismatch = check_target(target, threads)
        if result.mismatch:
            return result
        result.targets.append(summary)
    return result
