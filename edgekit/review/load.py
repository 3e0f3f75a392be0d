"""Loading: a bundle folder (manifest.json + report.json), checked, with a label unique within one review.

The folder and its manifest are read by the one bundle reader (bundle.read_bundle), as verify, bench and
embed read them; report.json is checked here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import __version__
from ..bundle import read_bundle
from ..errors import UsageError
from ..report import Report
from ..safety import inside_bundle

BUNDLE_FORMAT = "edgekit-bundle/1"


@dataclass
class LoadedBundle:
    """A bundle as read: its report.json both as written (`report`, for the JSON output) and as typed
    objects (`parsed`, `Report.from_dict`, for the table)."""

    path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    label: str = ""  # the model column; made unique across the bundles of one review
    parsed: Report = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.parsed = Report.from_dict(self.report)

    @property
    def model(self) -> str:
        location = str((self.report.get("source") or {}).get("location") or "") or self.path.name
        return location.rstrip("/").rsplit("/", 1)[-1] or location

    @property
    def name(self) -> str:
        return self.label or self.model

    @property
    def targets(self) -> list[dict[str, Any]]:
        return self.report["targets"]

    @property
    def original(self) -> dict[str, Any]:
        return self.report["original"]


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


def _require(report: dict[str, Any], where: Path) -> None:
    """The fields every renderer relies on; anything else is optional."""

    def missing(key: str) -> UsageError:
        return UsageError(f"{where}: not an edgekit report (missing or malformed '{key}')")

    if not isinstance(report.get("targets"), list):
        raise missing("targets")
    original = report.get("original")
    if not isinstance(original, dict) or not (isinstance(original.get("latency_ms"), dict) or (
            original.get("latency_ms") is None and original.get("latency_measured") is False)):  # built with --no-bench
        raise missing("original.latency_ms")
    for i, t in enumerate(report["targets"]):
        if not isinstance(t, dict) or not isinstance(t.get("target"), str):
            raise missing(f"targets[{i}].target")
        if not isinstance(t.get("latency_ms"), dict) and not (t.get("latency_ms") is None and t.get("latency_measured") is False):
            raise missing(f"targets[{i}].latency_ms")
        if t.get("accuracy") is not None and not isinstance(t["accuracy"], dict):
            raise missing(f"targets[{i}].accuracy")
        if t.get("budgets") is not None and not isinstance(t["budgets"], list):
            raise missing(f"targets[{i}].budgets")


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
    _require(report, folder / "report.json")
    try:
        return LoadedBundle(folder, manifest, report)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UsageError(f"{folder / 'report.json'}: not an edgekit report ({exc.__class__.__name__}: {exc})") from None


def load_bundles(paths: Iterable[str | os.PathLike[str]]) -> list[LoadedBundle]:
    bundles = [load_bundle(p) for p in paths]
    if not bundles:
        raise UsageError("give at least one bundle folder")
    _label(bundles)
    return bundles


def _label(bundles: list[LoadedBundle]) -> None:
    """Model names for the table; bundles of the same model and profile get their folder name added."""
    keys = [(b.model, b.report.get("profile")) for b in bundles]
    for b, key in zip(bundles, keys):
        b.label = f"{b.model} ({b.path.name})" if keys.count(key) > 1 and b.path.name != b.model else b.model
    seen: dict[tuple[str, Any], int] = {}
    for b, (_, profile) in zip(bundles, keys):  # still equal (same folder name elsewhere): number them
        seen[(b.label, profile)] = count = seen.get((b.label, profile), 0) + 1
        if count > 1:
            b.label = f"{b.label} #{count}"
