"""`verify`: is a bundle intact, and does each artifact still compute what it computed at build time?

Rules:
1. A bundle is a folder with a readable `manifest.json`; anything else is a usage error (exit 2).
2. Every path the manifest lists is relative and stays inside the bundle: an absolute path, a `..`
   part or a symlink resolving outside is a usage error (exit 2), never followed.
3. Every listed file exists with the listed size and sha256, in manifest order; the first that does not
   is the mismatch (exit 1), named with what differs.
4. At build time each target stores `reference.npz` (one input feed and the artifact's own outputs on it)
   and `reference.json` (the tolerance and where it ran). `verify` loads each artifact with its
   `runtime.json` settings — on the verify device (the CPU) when the target's device is not here, as
   compile does — runs the stored input and compares each output: cosine ≥ `min_cosine` and max absolute
   error ≤ `max_abs_error`. A target without a stored reference fails: a check that cannot run is not a pass.
5. Nothing depends on where the bundle lies: paths are relative, so a moved bundle verifies.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import write_json, write_npz
from .errors import EdgekitError, UsageError
from .runtimes import Feed, Session, open_recorded
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
    scale = max((float(np.max(np.abs(np.asarray(o, dtype=np.float64)), initial=0.0)) for o in outputs), default=0.0)
    write_json(out_dir / REFERENCE_JSON, {
        "inputs": list(feed), "outputs": list(session.output_names),
        "tolerance": {"min_cosine": MIN_COSINE, "max_abs_error": RELATIVE_ABS_ERROR * scale + 1e-4},
        "recorded_on": {"runtime": session.runtime, "device": device, "execution_provider": provider},
    })


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder; give an edgekit bundle folder (the -o of compile)")
    path = root / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{root}: not an edgekit bundle (no manifest.json)")
    inside_bundle(root, "manifest.json", ".")  # a manifest linked in from elsewhere is not this bundle's
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise UsageError(f"{path}: not an edgekit manifest (no 'files' list)")
    return manifest


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
    return len(entries), None


def _load_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The runtime settings to load with: the target's own where its device is here, else those of the verify
    device compile used (recorded as `verified_with`)."""
    from .devices import recorded_availability

    if recorded_availability(settings).present:
        return settings
    return {**settings.get("verified_with", {}), "runtime": settings["runtime"], "execution_provider": "CPUExecutionProvider"}


def check_target(root: Path, name: str, threads: int = 1) -> tuple[str, str | None]:
    """(a one-line summary, the first mismatch or None) for one target folder."""
    from .stages.verify import cosine

    folder = inside_bundle(root, name)
    settings_path, npz_path, tol_path = folder / "runtime.json", folder / REFERENCE_NPZ, folder / REFERENCE_JSON
    if not settings_path.is_file():
        return name, f"{name}/runtime.json: missing"
    if not npz_path.is_file() or not tol_path.is_file():
        return name, f"{name}/{REFERENCE_NPZ}: no reference stored (bundle built before edgekit stored one); recompile it"
    settings = json.loads(settings_path.read_text())
    artifact = inside_bundle(folder, settings.get("artifact"), "runtime.json")
    used = _load_settings(settings)
    device = used.get("device", "CPU")
    try:
        session = open_recorded(artifact, used, threads)
    except EdgekitError as exc:
        return name, f"{name}/{artifact.name}: does not load in {settings['runtime']} on {device}: {exc}"
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
        cos = cosine(want, have)
        err = float(np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)), initial=0.0))
        if not np.isfinite(err):
            err = float("inf")
        if cos < tolerance["min_cosine"] or err > tolerance["max_abs_error"]:
            return name, (f"{name}/{artifact.name}: output {out} differs from {name}/{REFERENCE_NPZ}: cosine {cos:.6f} "
                          f"(min {tolerance['min_cosine']}), max abs error {err:.3g} (max {tolerance['max_abs_error']:.3g})")
        worst_cos, worst_err = min(worst_cos, cos), max(worst_err, err)
    return f"{name}: {settings['runtime']} {device}, cosine {worst_cos:.6f}, max abs error {worst_err:.3g}", None


def verify(bundle: str | Path, threads: int = 1) -> VerifyResult:
    """Check a bundle's files, then run each target's stored reference. Raises UsageError for a non-bundle."""
    root = Path(bundle)
    manifest = _read_manifest(root)
    result = VerifyResult(root)
    result.files, result.mismatch = check_files(root, manifest)
    if result.mismatch:
        return result
    targets = manifest.get("targets")
    if not isinstance(targets, list) or not targets:
        result.mismatch = "manifest.json: lists no targets"
        return result
    for name in targets:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise UsageError(f"{root / 'manifest.json'}: target name '{name}' is not a folder of the bundle")
        summary, result.mismatch = check_target(root, name, threads)
        if result.mismatch:
            return result
        result.targets.append(summary)
    return result
