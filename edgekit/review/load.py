"""Loading: a bundle folder (manifest.json + report.json), checked, with a label unique within one review.

The folder and its manifest are read by the one bundle reader (bundle.read_bundle), as verify, bench and
embed read them; report.json is read into typed records (`records.read_report`) here, once.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import __version__
from ..bundle import read_bundle
from ..errors import UsageError
from ..safety import inside_bundle
from .records import ReportRecord, read_report

BUNDLE_FORMAT = "edgekit-bundle/1"


@dataclass
class LoadedBundle:
    """A bundle as read: its report.json as written (`report`, for the JSON output) and as typed records
    (`record`, read once by `records.read_report`, for everything else)."""

    path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    record: ReportRecord
    label: str = ""  # the model column; made unique across the bundles of one review

    @property
    def model(self) -> str:
        return self.record.model or self.path.name

    @property
    def name(self) -> str:
        return self.label or self.model


def _version_tuple(text: Any) -> tuple[int, int] | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: {what} is not valid JSON ({exc.__class__.__name__}: {str(exc).splitlines()[0][:80]})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def load_bundle(path: str | os.PathLike[str]) -> LoadedBundle:
    """One bundle folder (its manifest.json or report.json is accepted too)."""
    given = Path(path)
    folder = given.parent if given.is_file() and given.name in ("manifest.json", "report.json") else given
    if not folder.exists():
        raise UsageError(f"{given}: no such bundle folder")
    if not folder.is_dir():
        raise UsageError(f"{given}: not an edgekit bundle (give the bundle folder, with manifest.json and report.json)")
    manifest = read_bundle(folder).manifest  # the one bundle reader: manifest.json inside the folder, readable
    inside_bundle(folder, "report.json", ".")  # read only what lies inside the bundle, never through a link out
    if manifest.get("format") != BUNDLE_FORMAT:
        written_by = manifest.get("edgekit") or (manifest.get("versions") or {}).get("edgekit") or "unknown"
        raise UsageError(f"{folder}: bundle from an incompatible edgekit version {written_by} "
                         f"(format {manifest.get('format')!r}; edgekit {__version__} reads {BUNDLE_FORMAT})")
    if not (folder / "report.json").is_file():
        raise UsageError(f"{folder}: bundle has no report.json")
    report = _read_json(folder / "report.json", "report.json")
    if not isinstance(report, dict):
        raise UsageError(f"{folder / 'report.json'}: not an edgekit report")
    version = report.get("edgekit_version")
    theirs, ours = _version_tuple(version), _version_tuple(__version__)
    if theirs is None or (ours is not None and theirs > ours):
        raise UsageError(f"{folder}: bundle from an incompatible edgekit version {version} (this is edgekit {__version__})")
    return LoadedBundle(folder, manifest, report, read_report(report, folder / "report.json"))


def load_bundles(paths: Iterable[str | os.PathLike[str]]) -> list[LoadedBundle]:
    bundles = [load_bundle(p) for p in paths]
    if not bundles:
        raise UsageError("give at least one bundle folder")
    _label(bundles)
    return bundles


def _label(bundles: list[LoadedBundle]) -> None:
    """Model names for the table; bundles of the same model and profile get their folder name added."""
    keys = [(b.model, b.record.profile) for b in bundles]
    for b, key in zip(bundles, keys):
        b.label = f"{b.model} ({b.path.name})" if keys.count(key) > 1 and b.path.name != b.model else b.model
    seen: dict[tuple[str, Any], int] = {}
    for b, (_, profile) in zip(bundles, keys):  # still equal (same folder name elsewhere): number them
        seen[(b.label, profile)] = count = seen.get((b.label, profile), 0) + 1
        if count > 1:
            b.label = f"{b.label} #{count}"
