"""Review: read finished bundles and render them for a reviewer, optionally against a baseline.

1. `load_bundle(path)` reads a bundle folder (manifest.json + report.json). A missing path, a folder
   that is not a bundle, unreadable JSON, a manifest format other than `edgekit-bundle/1` or a report
   written by a newer edgekit (major.minor) is a `UsageError` naming the path.
2. `render(bundles, fmt, comparison)` writes one of three formats:
   - `md`: one table across every bundle, target and profile, fit to paste into a pull request;
   - `json`: every figure and setting of every loaded report (and the comparison);
   - `html`: one self-contained page (inline CSS and SVG, nothing fetched from anywhere) with the
     table, a latency distribution plot per target and an accuracy-vs-latency scatter per bundle.
3. `compare(new, old)` matches targets by (target, profile) and reports p50, p90, size and cosine
   min, old against new. A regression is p50, p90 or size up by more than `max_regression`
   (relative), or cosine min down by more than `max_cosine_drop` (absolute). Targets on one side only
   are notes, never errors.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import __version__
from .bundle import clean_json, write_text_atomic
from .errors import UsageError
from .safety import inside_bundle

BUNDLE_FORMAT = "edgekit-bundle/1"
REVIEW_FORMAT = "edgekit-review/1"
FORMATS = ("md", "json", "html")
DEFAULT_MAX_REGRESSION = 0.05
DEFAULT_MAX_COSINE_DROP = 0.005
_EPS = 1e-12  # "more than 5%" must not trip on the rounding of exactly 5%
_DASH = "—"
NOT_MEASURED = "not measured"


# ------------------------------------------------------------------ loading


@dataclass
class LoadedBundle:
    path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    label: str = ""  # the model column; made unique across the bundles of one review

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
    if not (folder / "manifest.json").is_file():
        raise UsageError(f"{folder}: not an edgekit bundle (no manifest.json)")
    for name in ("manifest.json", "report.json"):  # read only what lies inside the bundle, never through a link out
        inside_bundle(folder, name, ".")
    manifest = _read_json(folder / "manifest.json", "manifest.json")
    if not isinstance(manifest, dict):
        raise UsageError(f"{folder / 'manifest.json'}: not an edgekit manifest")
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
    return LoadedBundle(folder, manifest, report)


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


def parse_fraction(text: str | float, option: str = "--max-regression") -> float:
    """'5%' -> 0.05, '0.05' -> 0.05. A bare number above 1 is refused: write 5% for five percent."""
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1].strip() if percent else raw)
    except ValueError:
        value = math.nan
    if percent:
        value /= 100.0
    if not math.isfinite(value) or value < 0 or (not percent and value > 1):
        raise UsageError(f"{option}: {text!r} is not a fraction (0.05) or a percentage (5%) between 0 and 100%")
    return value


# ------------------------------------------------------------------ numbers


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _lat(entry: dict[str, Any], key: str) -> float | None:
    return _num((entry.get("latency_ms") or {}).get(key))


def _acc(entry: dict[str, Any], key: str) -> float | None:
    return _num((entry.get("accuracy") or {}).get(key))


def _samples(entry: dict[str, Any]) -> list[float]:
    raw = entry.get("latency_samples_ms")
    if not isinstance(raw, list):
        return []
    return [v for v in (_num(x) for x in raw) if v is not None and v >= 0]


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    number = _num(value)
    return _DASH if number is None else f"{number:{spec}}{suffix}"


def _ms(value: Any) -> str:
    number = _num(value)
    if number is None:
        return _DASH
    return f"{number:.0f}" if abs(number) >= 100 else f"{number:#.3g}"


def _mb(size_bytes: Any) -> str:
    number = _num(size_bytes)
    if number is None:
        return _DASH
    mb = number / 1e6
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


def _pct(value: float | None) -> str:
    return _DASH if value is None else f"{value:+.1%}"


def _budget(entry: dict[str, Any], name: str) -> float | None:
    for check in entry.get("budgets") or []:
        if isinstance(check, dict) and check.get("budget") == name:
            return _num(check.get("limit"))
    return None


# ------------------------------------------------------------------ comparison


METRICS = (  # name, label, how to read it, higher is worse
    ("p50_ms", "p50 ms", lambda t: _lat(t, "p50"), True),
    ("p90_ms", "p90 ms", lambda t: _lat(t, "p90"), True),
    ("size_bytes", "size bytes", lambda t: _num(t.get("size_bytes")), True),
    ("cosine_min", "cosine min", lambda t: _acc(t, "cosine_min"), False),
)


@dataclass
class Change:
    metric: str
    old: float | None
    new: float | None
    delta: float | None
    relative: float | None
    regression: bool

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "old": self.old, "new": self.new, "delta": self.delta,
                "relative": self.relative, "regression": self.regression}


@dataclass
class TargetDiff:
    target: str
    profile: str
    model: str
    changes: list[Change]

    @property
    def regressed(self) -> bool:
        return any(c.regression for c in self.changes)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "profile": self.profile, "model": self.model, "regressed": self.regressed,
                "changes": [c.to_dict() for c in self.changes]}


@dataclass
class Comparison:
    baseline: str
    max_regression: float
    max_cosine_drop: float
    pairs: list[TargetDiff]
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(p.regressed for p in self.pairs)

    def summary(self) -> str:
        """One line naming every regression, for stderr."""
        parts = []
        for p in self.pairs:
            for c in p.regressions:
                what = f"{c.delta:+.4f}" if c.metric == "cosine_min" else _pct(c.relative)
                parts.append(f"{p.target}/{p.profile} {c.metric} {what}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "max_regression": self.max_regression, "max_cosine_drop": self.max_cosine_drop,
                "regressed": self.regressed, "targets": [p.to_dict() for p in self.pairs], "notes": self.notes}


def _change(metric: str, old: float | None, new: float | None, higher_is_worse: bool, max_regression: float,
            max_cosine_drop: float) -> Change:
    if old is None or new is None:
        return Change(metric, old, new, None, None, False)
    delta = new - old
    relative = delta / old if old != 0 else None
    if higher_is_worse:
        regression = relative is not None and relative > max_regression + _EPS
    else:
        regression = -delta > max_cosine_drop + _EPS
    return Change(metric, old, new, delta, relative, regression)


def _as_reports(side: Any) -> list[tuple[str, dict[str, Any]]]:
    """A LoadedBundle, a report dict, or a list of either -> [(model, report)]."""
    items = side if isinstance(side, (list, tuple)) else [side]
    out = []
    for item in items:
        if isinstance(item, LoadedBundle):
            out.append((item.model, item.report))
        else:
            out.append((LoadedBundle(Path("."), {}, item).model, item))
    return out


def _index(side: list[tuple[str, dict[str, Any]]], which: str) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    index: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for model, report in side:
        for t in report.get("targets") or []:
            key = (str(t.get("target")), str(t.get("profile") or report.get("profile") or ""))
            if key in index:
                raise UsageError(f"target {key[0]!r} with profile {key[1]!r} appears twice in the {which} bundles; "
                                 "--baseline compares one bundle per target and profile")
            index[key] = (model, t)
    return index


def compare(new: Any, old: Any, max_regression: float = DEFAULT_MAX_REGRESSION,
            max_cosine_drop: float = DEFAULT_MAX_COSINE_DROP, baseline_name: str | None = None) -> Comparison:
    """New against old, target by target (matched by target name and profile)."""
    new_side, old_side = _as_reports(new), _as_reports(old)
    new_index, old_index = _index(new_side, "new"), _index(old_side, "baseline")
    pairs, notes = [], []
    for key, (model, t_new) in new_index.items():
        if key not in old_index:
            notes.append(f"{key[0]} (profile {key[1]}): not in baseline")
            continue
        t_old = old_index[key][1]
        changes = [_change(name, read(t_old), read(t_new), worse, max_regression, max_cosine_drop)
                   for name, _, read, worse in METRICS]
        pairs.append(TargetDiff(key[0], key[1], model, changes))
    for key in old_index:
        if key not in new_index:
            notes.append(f"{key[0]} (profile {key[1]}): missing from new")
    new_models = sorted({m for m, _ in new_side})
    old_models = sorted({m for m, _ in old_side})
    if pairs and new_models != old_models:
        notes.append(f"the baseline is of {', '.join(old_models)}, the new bundle(s) of {', '.join(new_models)}")
    if baseline_name is None:
        baseline_name = ", ".join(str(b.path) for b in (old if isinstance(old, (list, tuple)) else [old])
                                  if isinstance(b, LoadedBundle)) or "baseline"
    return Comparison(baseline_name, max_regression, max_cosine_drop, pairs, notes)


# ------------------------------------------------------------------ table rows (shared by md and html)


@dataclass
class Row:
    model: str
    target: str
    profile: str
    runtime: str
    precision: str
    size: str
    p50: str
    p90: str
    p99: str
    speedup: str
    cosine: str
    top1: str
    verdict: str  # pass / fail / "" for the original
    noisy: bool


def _rows(bundles: Sequence[LoadedBundle]) -> list[Row]:
    rows = []
    for b in bundles:
        o = b.original
        rows.append(Row(b.name, "original", str(b.report.get("profile") or ""), str(o.get("runtime") or ""),
                        str(o.get("precision") or ""), _mb(o.get("size_bytes")), _ms(_lat(o, "p50")),
                        _ms(_lat(o, "p90")), _ms(_lat(o, "p99")), "1.00×" if _lat(o, "p50") is not None else _DASH, _DASH, _DASH, "",
                        bool(o.get("latency_noisy"))))
        for t in b.targets:
            top1 = _acc(t, "top1_agreement")
            timed = [_ms(_lat(t, k)) for k in ("p50", "p90", "p99")] if _measured(t) else [NOT_MEASURED] * 3
            rows.append(Row(b.name, t["target"], str(t.get("profile") or b.report.get("profile") or ""),
                            str(t.get("runtime") or ""), str(t.get("precision") or ""), _mb(t.get("size_bytes")),
                            *timed,
                            _fmt(t.get("speedup_p50"), ".2f", "×"), _fmt(_acc(t, "cosine_min"), ".4f"),
                            _DASH if top1 is None else f"{top1:.1%}", str(t.get("verdict") or ""),
                            bool(t.get("latency_noisy"))))
    return rows


def _measured(entry: dict[str, Any]) -> bool:
    """False for a target whose device was not on the compiling machine (no latency in its report)."""
    return entry.get("latency_measured") is not False


def _has_top1(bundles: Sequence[LoadedBundle]) -> bool:
    return any(_acc(t, "top1_agreement") is not None for b in bundles for t in b.targets)


def _noisy(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [f"{r.model}/{r.target}" for r in _rows(bundles) if r.noisy]


def _synthetic(bundles: Sequence[LoadedBundle]) -> list[str]:
    return [b.name for b in bundles if (b.report.get("data") or {}).get("synthetic")]


# ------------------------------------------------------------------ markdown


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict_md(verdict: str) -> str:
    return {"pass": "✅ pass", "fail": "❌ FAIL", "": _DASH}.get(verdict, _md_cell(verdict))


def render_markdown(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    top1 = _has_top1(bundles)
    head = ["model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms",
            "speedup p50", "cosine min"] + (["top-1 agreement"] if top1 else []) + ["verdict"]
    align = ["---"] * 5 + ["---:"] * 6 + (["---:"] if top1 else []) + ["---"]
    lines = ["## edgekit review", "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in _rows(bundles):
        cells = [r.model, r.target, r.profile, r.runtime, r.precision, r.size, r.p50 + (" ⚠" if r.noisy else ""),
                 r.p90, r.p99, r.speedup, r.cosine] + ([r.top1] if top1 else [])
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + f" | {_verdict_md(r.verdict)} |")
    lines.append("")
    verdicts = ", ".join(f"{b.name} ({b.report.get('profile')}): **{str(b.report.get('verdict') or '?').upper()}**"
                         for b in bundles)
    lines.append(f"- verdict: {verdicts}")
    for b in bundles:
        bench = b.report.get("benchmark") or {}
        data = b.report.get("data") or {}
        lines.append(f"- {_md_cell(b.name)}: `{b.report.get('source', {}).get('location')}`, task `{b.report.get('task')}`, "
                     f"batch {bench.get('batch', 1)}, benchmark input `{bench.get('input')}`, {bench.get('threads')} threads, "
                     f"accuracy on {data.get('eval_samples')} samples ({data.get('origin')}), edgekit {b.report.get('edgekit_version')}")
    synthetic = _synthetic(bundles)
    if synthetic:
        lines.append(f"- **accuracy from synthetic inputs, not real data:** {', '.join(synthetic)}")
    noisy = _noisy(bundles)
    if noisy:
        lines.append(f"- ⚠ noisy latency (coefficient of variation > 25%), do not trust small differences: {', '.join(noisy)}")
    if comparison is not None:
        lines += ["", _comparison_markdown(comparison)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _change_cells(c: Change) -> tuple[str, str, str]:
    if c.metric == "size_bytes":
        old, new = _fmt(c.old, ",.0f"), _fmt(c.new, ",.0f")
    elif c.metric == "cosine_min":
        old, new = _fmt(c.old, ".4f"), _fmt(c.new, ".4f")
    else:
        old, new = _ms(c.old), _ms(c.new)
    change = _pct(c.relative)
    if c.metric == "cosine_min" and c.delta is not None:
        change = f"{c.delta:+.4f}"
    return old, new, change


def _comparison_markdown(comparison: Comparison) -> str:
    status = ("❌ **regression** beyond the threshold" if comparison.regressed else "✅ no regression beyond the threshold")
    lines = [f"### Against baseline `{comparison.baseline}`", "",
             f"{status} (latency p50/p90 or size up by more than {comparison.max_regression:.1%}, "
             f"cosine min down by more than {comparison.max_cosine_drop:g})", ""]
    if comparison.pairs:
        lines += ["| target | profile | metric | baseline | new | change | |", "|---|---|---|---:|---:|---:|---|"]
        for p in comparison.pairs:
            for c in p.changes:
                old, new, change = _change_cells(c)
                flag = "❌ **regression**" if c.regression else ""
                metric = f"**{c.metric}**" if c.regression else c.metric
                lines.append(f"| {_md_cell(p.target)} | {_md_cell(p.profile)} | {metric} | {old} | {new} | {change} | {flag} |")
    else:
        lines.append("No target is in both the baseline and the new bundle(s).")
    if comparison.notes:
        lines += [""] + [f"- {_md_cell(n)}" for n in comparison.notes]
    return "\n".join(lines)


# ------------------------------------------------------------------ json


def render_json(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    data: dict[str, Any] = {
        "format": REVIEW_FORMAT,
        "edgekit_version": __version__,
        "bundles": [{"path": str(b.path), "model": b.name, "report": b.report,
                     "manifest": {k: v for k, v in b.manifest.items() if k != "files"},
                     "files": b.manifest.get("files", [])} for b in bundles],
        "noisy_latency": _noisy(bundles),
        "comparison": comparison.to_dict() if comparison is not None else None,
    }
    return json.dumps(clean_json(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ svg helpers

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
ORIGINAL_COLOR = "#555555"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** k
            if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                ticks.append(v)
    if len(ticks) > 8:
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")] or ticks
    return ticks


def _tick_label(value: float, step: float) -> str:
    """Enough decimals to tell ticks `step` apart (0.25 -> 2, 0.002 -> 3, 5 -> 0)."""
    decimals = 0
    while decimals < 8 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6 * max(1.0, step * 10 ** decimals):
        decimals += 1
    return f"{value:.{decimals}f}"


class Axis:
    """A linear or log mapping from data to pixels."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.log = log and lo > 0 and hi > 0
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            hi = lo + 1.0
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, value: float) -> float:
        v = math.log10(max(value, 1e-12)) if self.log else value
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            return log_ticks(10 ** self.lo, 10 ** self.hi)
        return [t for t in nice_ticks(self.lo, self.hi) if self.lo - 1e-12 <= t <= self.hi + 1e-12]

    def label(self, value: float) -> str:
        ticks = self.ticks()
        if self.log or len(ticks) < 2:
            return f"{value:g}"
        return _tick_label(value, ticks[1] - ticks[0])


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{_e(title)}" style="{FONT};font-size:12px">', f"<title>{_e(title)}</title>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']


def _jitter(i: int, seed: str) -> float:
    """Deterministic in [-1, 1]: the same bundle always draws the same picture."""
    return (zlib.crc32(f"{seed}:{i}".encode()) % 10007) / 10006 * 2 - 1


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _series(entry: dict[str, Any]) -> dict[str, Any]:
    """What the distribution plot needs: samples when present, the reported percentiles always."""
    samples = sorted(_samples(entry))
    stats = {k: _lat(entry, k) for k in ("min", "p50", "p90", "p95", "p99", "max")}
    if samples:
        stats["q1"], stats["q3"] = _percentile(samples, 25), _percentile(samples, 75)
        for k, q in (("min", 0), ("max", 100), ("p50", 50), ("p90", 90), ("p99", 99)):
            if stats.get(k) is None:
                stats[k] = _percentile(samples, q)
    return {"samples": samples, "stats": stats, "noisy": bool(entry.get("latency_noisy")), "raw": _samples(entry)}


def latency_svg(name: str, original: dict[str, Any], target: dict[str, Any], color: str, width: int = 1040) -> str:
    """Original vs artifact: per series a strip of every timed run, a box (quartiles), a p50 bar and p90/p99 ticks.

    Without samples (older reports) the line spans min..max with the reported percentiles marked.
    The axis is logarithmic when the slowest run is more than 20 times the fastest.
    """
    if not _measured(target):
        return f'<p class="muted">{_e(name)}: latency {NOT_MEASURED} ({_e(target.get("latency_not_measured") or "device not present")}).</p>'
    series = [("original", _series(original), ORIGINAL_COLOR), (name, _series(target), color)]
    values = [v for _, s, _ in series for v in list(s["stats"].values()) + s["samples"] if v is not None and v > 0]
    if not values:
        return f'<p class="muted">{_e(name)}: no latency figures in the report.</p>'
    lo, hi = min(values), max(values)
    log = hi / lo > 20
    left, right, top, lane = 120, 260, 34, 62
    height = top + lane * len(series) + 46
    if log:
        lo_ax, hi_ax = lo / 1.25, hi * 1.25
    else:
        pad = (hi - lo) * 0.06 or hi * 0.1 or 1.0
        lo_ax, hi_ax = max(0.0, lo - pad), hi + pad
    x = Axis(lo_ax, hi_ax, left, width - right, log=log)
    title = f"{name}: latency per run, original vs artifact (ms{', log scale' if x.log else ''})"
    out = _svg_open(width, height, title)
    out.append(f'<text x="{left}" y="18" font-weight="600">{_e(title)}</text>')
    bottom = top + lane * len(series)
    legend = "dots: timed runs · box: p25–p75 · bar: p50 · ticks: p90, p99 · line: min–max"
    out.append(f'<text x="{width - 8}" y="{bottom + 36}" text-anchor="end" font-size="11" fill="#666">{_e(legend)}</text>')
    for t in x.ticks():
        px = x(t)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#e6e6e6"/>')
        out.append(f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 5}" stroke="#333"/>')
        out.append(f'<text x="{px:.1f}" y="{bottom + 18}" text-anchor="middle" fill="#333">{_e(x.label(t))}</text>')
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}" stroke="#333"/>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{bottom + 36}" text-anchor="middle" fill="#333">'
               f'latency per inference, ms{" (log scale)" if x.log else ""}</text>')
    for i, (label, s, col) in enumerate(series):
        cy = top + lane * i + lane / 2
        st = s["stats"]
        out.append(f'<text x="{left - 10}" y="{cy + 4:.1f}" text-anchor="end" font-weight="600" fill="{col}">{_e(label)}</text>')
        raw = s["raw"]
        if raw:
            step = max(1, len(raw) // 1500)  # at most ~1500 dots a lane
            dots = [f'<circle cx="{x(v):.1f}" cy="{cy + _jitter(j, label) * lane * 0.3:.1f}" r="1.8"/>'
                    for j, v in enumerate(raw[::step])]
            out.append(f'<g fill="{col}" fill-opacity="0.28">{"".join(dots)}</g>')
        if st.get("min") is not None and st.get("max") is not None:
            out.append(f'<line x1="{x(st["min"]):.1f}" y1="{cy:.1f}" x2="{x(st["max"]):.1f}" y2="{cy:.1f}" stroke="{col}" stroke-width="1"/>')
        if st.get("q1") is not None and st.get("q3") is not None:
            x1, x3 = x(st["q1"]), x(st["q3"])
            out.append(f'<rect x="{x1:.1f}" y="{cy - 11:.1f}" width="{max(x3 - x1, 1):.1f}" height="22" fill="{col}" '
                       f'fill-opacity="0.18" stroke="{col}" stroke-width="1.2"/>')
        if st.get("p50") is not None:
            out.append(f'<line x1="{x(st["p50"]):.1f}" y1="{cy - 14:.1f}" x2="{x(st["p50"]):.1f}" y2="{cy + 14:.1f}" '
                       f'stroke="{col}" stroke-width="3"/>')
        last_label = -1e9
        for key in ("p90", "p99"):
            if st.get(key) is not None:
                px = x(st[key])
                out.append(f'<line x1="{px:.1f}" y1="{cy - 8:.1f}" x2="{px:.1f}" y2="{cy + 8:.1f}" stroke="{col}" stroke-width="1.5"/>')
                below = px - last_label < 24  # too close to the p90 label: put this one under the lane
                ty = cy + 21 if below else cy - 12
                out.append(f'<text x="{px:.1f}" y="{ty:.1f}" text-anchor="middle" font-size="10" fill="{col}">{key}</text>')
                last_label = px if not below else last_label
        summary = f'p50 {_ms(st.get("p50"))} · p90 {_ms(st.get("p90"))} · p99 {_ms(st.get("p99"))} ms'
        detail = f'{len(raw)} runs' if raw else "percentiles only (no samples in report)"
        if s["noisy"]:
            detail += " · NOISY"
        out.append(f'<text x="{width - right + 12}" y="{cy - 2:.1f}" fill="#222">{_e(summary)}</text>')
        out.append(f'<text x="{width - right + 12}" y="{cy + 13:.1f}" font-size="11" fill="{"#b00020" if s["noisy"] else "#666"}">'
                   f'{_e(detail)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def scatter_svg(bundle: LoadedBundle, colors: dict[str, str], width: int = 1040, height: int = 420) -> str:
    """Accuracy (cosine min) against latency (p50): the original at cosine 1.0, one point per target,
    with the min_cosine budget drawn horizontally and max_latency_ms (a p90 budget) vertically."""
    points = []
    o_p50 = _lat(bundle.original, "p50")
    if o_p50 is not None:
        points.append(("original", o_p50, 1.0, ORIGINAL_COLOR, ""))
    for t in bundle.targets:
        p50, cos = _lat(t, "p50"), _acc(t, "cosine_min")
        if p50 is not None and cos is not None:
            points.append((t["target"], p50, cos, colors.get(t["target"], PALETTE[0]), str(t.get("verdict") or "")))
    min_cos = sorted({v for t in bundle.targets if (v := _budget(t, "min_cosine")) is not None})
    max_lat = sorted({v for t in bundle.targets if (v := _budget(t, "max_latency_ms")) is not None})
    title = f"{bundle.name} ({bundle.report.get('profile')}): accuracy vs latency"
    if not points:
        return f'<p class="muted">{_e(title)}: no figures to plot.</p>'
    left, right, top, bottom = 80, 270, 34, 52
    xs = [p[1] for p in points] + max_lat
    ys = [p[2] for p in points] + min_cos
    x_hi = max(xs) * 1.15 or 1.0
    y_lo, y_hi = min(ys), 1.0
    span = (y_hi - y_lo) or 0.01
    y_lo, y_hi = y_lo - span * 0.12, y_hi + span * 0.08
    x = Axis(0.0, x_hi, left, width - right)
    y = Axis(y_lo, y_hi, height - bottom, top)
    out = _svg_open(width, height, title)
    out.append(f'<text x="{left}" y="20" font-weight="600">{_e(title)}</text>')
    for t in x.ticks():
        px = x(t)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom}" stroke="#eeeeee"/>')
        out.append(f'<text x="{px:.1f}" y="{height - bottom + 17}" text-anchor="middle" fill="#333">{_e(x.label(t))}</text>')
    for t in y.ticks():
        py = y(t)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#eeeeee"/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end" fill="#333">{_e(y.label(t))}</text>')
    out.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" text-anchor="middle" fill="#333">p50 latency, ms (batch 1)</text>')
    out.append(f'<text transform="translate(18 {(top + height - bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" fill="#333">'
               f'cosine min vs original</text>')
    for v in min_cos:
        py = y(v)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#b00020" stroke-dasharray="6 4" stroke-width="1.5"/>')
        out.append(f'<text x="{width - right - 4}" y="{py + 14:.1f}" text-anchor="end" font-size="11" fill="#b00020">'
                   f'{_e(f"min_cosine {v:g} (budget)")}</text>')
    for v in max_lat:
        px = x(v)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom}" stroke="#b00020" stroke-dasharray="6 4" stroke-width="1.5"/>')
        out.append(f'<text x="{px - 4:.1f}" y="{top + 12}" text-anchor="end" font-size="11" fill="#b00020">'
                   f'{_e(f"max_latency_ms {v:g} (p90 budget)")}</text>')
    # labels in the right margin, in the order of the points, pushed apart so none overlap
    placed = sorted(((y(p[2]), p) for p in points), key=lambda item: item[0])
    label_y: list[float] = []
    for py, _ in placed:
        label_y.append(max(py, label_y[-1] + 15) if label_y else py)
    overflow = (label_y[-1] - (height - bottom)) if label_y else 0
    if overflow > 0:
        label_y = [v - overflow for v in label_y]
    for (py, (name, px_val, cos, col, verdict)), ly in zip(placed, label_y):
        px = x(px_val)
        ring = ' stroke="#b00020" stroke-width="2.5"' if verdict == "fail" else ' stroke="#ffffff" stroke-width="1"'
        shape = (f'<rect x="{px - 5:.1f}" y="{py - 5:.1f}" width="10" height="10" fill="{col}"{ring}/>' if name == "original"
                 else f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{col}"{ring}/>')
        out.append(shape)
        lx = width - right + 10
        out.append(f'<line x1="{px + 7:.1f}" y1="{py:.1f}" x2="{lx - 3}" y2="{ly:.1f}" stroke="{col}" stroke-opacity="0.35"/>')
        text = f"{name}: {_ms(px_val)} ms, cosine {cos:.4f}" + (" FAIL" if verdict == "fail" else "")
        out.append(f'<text x="{lx}" y="{ly + 4:.1f}" font-size="11" fill="{col}">{_e(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------ html

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1b1b1b;margin:24px auto;max-width:1100px;padding:0 16px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 6px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#666}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #d8d8d8;padding:4px 8px;text-align:left}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.original td{color:#555;background:#fafafa}
.pass{color:#116611;font-weight:600}.fail{color:#b00020;font-weight:700}tr.regression td{background:#fde8ea}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px;margin:8px 0}
.bad{background:#fde8ea;border-left:4px solid #b00020;padding:6px 10px;margin:8px 0}
.good{background:#e8f6e8;border-left:4px solid #118811;padding:6px 10px;margin:8px 0}
svg{display:block;margin:8px 0;max-width:100%;height:auto}details{margin:6px 0}summary{cursor:pointer}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px;margin:6px 0}dt{color:#555}dd{margin:0}
"""


def _settings_html(title: str, settings: Any) -> str:
    if not isinstance(settings, dict) or not settings:
        return ""
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v)}</dd>"
                   for k, v in settings.items())
    return f"<details><summary>{_e(title)}</summary><dl>{rows}</dl></details>"


def _table_html(bundles: Sequence[LoadedBundle]) -> str:
    top1 = _has_top1(bundles)
    head = ["model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms",
            "speedup p50", "cosine min"] + (["top-1 agreement"] if top1 else []) + ["verdict"]
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in _rows(bundles):
        noisy = ' <span class="fail" title="noisy latency">⚠</span>' if r.noisy else ""
        nums = [r.size, r.p50, r.p90, r.p99, r.speedup, r.cosine] + ([r.top1] if top1 else [])
        cells = "".join(f"<td>{_e(c)}</td>" for c in (r.model, r.target, r.profile, r.runtime, r.precision))
        cells += "".join(f'<td class="n">{_e(c)}{noisy if i == 1 else ""}</td>' for i, c in enumerate(nums))
        verdict = {"pass": '<td class="pass">pass</td>', "fail": '<td class="fail">FAIL</td>', "": f"<td>{_DASH}</td>"}.get(
            r.verdict, f"<td>{_e(r.verdict)}</td>")
        out.append(f'<tr{" class=original" if r.target == "original" else ""}>{cells}{verdict}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _comparison_html(c: Comparison) -> str:
    status = ("bad", "Regression beyond the threshold") if c.regressed else ("good", "No regression beyond the threshold")
    out = [f"<h2>Against baseline <code>{_e(c.baseline)}</code></h2>",
           f'<div class="{status[0]}"><strong>{_e(status[1])}</strong> (latency p50/p90 or size up by more than '
           f"{_e(f'{c.max_regression:.1%}')}, cosine min down by more than {_e(f'{c.max_cosine_drop:g}')})"
           + (f": {_e(c.summary())}" if c.regressed else "") + "</div>"]
    if c.pairs:
        out.append("<table><thead><tr><th>target</th><th>profile</th><th>metric</th><th>baseline</th><th>new</th>"
                   "<th>change</th><th></th></tr></thead><tbody>")
        for p in c.pairs:
            for ch in p.changes:
                old, new, change = _change_cells(ch)
                cls = ' class="regression"' if ch.regression else ""
                flag = '<span class="fail">REGRESSION</span>' if ch.regression else ""
                out.append(f"<tr{cls}><td>{_e(p.target)}</td><td>{_e(p.profile)}</td><td>{_e(ch.metric)}</td>"
                           f'<td class="n">{_e(old)}</td><td class="n">{_e(new)}</td><td class="n">{_e(change)}</td><td>{flag}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append('<p class="muted">No target is in both the baseline and the new bundle(s).</p>')
    if c.notes:
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in c.notes) + "</ul>")
    return "\n".join(out)


def render_html(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    names = ", ".join(dict.fromkeys(b.name for b in bundles))
    title = f"edgekit review: {names}"
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="muted">{len(bundles)} bundle(s) · rendered by edgekit {_e(__version__)} · batch-1 latency, '
            "original and artifacts interleaved in one run per bundle</p>"]
    synthetic, noisy = _synthetic(bundles), _noisy(bundles)
    if synthetic:
        body.append(f'<div class="warn"><strong>Accuracy from synthetic inputs, not real data:</strong> {_e(", ".join(synthetic))}</div>')
    if noisy:
        body.append(f'<div class="warn"><strong>Noisy latency</strong> (coefficient of variation &gt; 25%), do not trust small '
                    f"differences: {_e(', '.join(noisy))}</div>")
    body.append(_table_html(bundles))
    if comparison is not None:
        body.append(_comparison_html(comparison))
    for b in bundles:
        r = b.report
        colors = {t["target"]: PALETTE[i % len(PALETTE)] for i, t in enumerate(b.targets)}
        data, bench = r.get("data") or {}, r.get("benchmark") or {}
        body.append(f"<h2>{_e(b.name)} · profile {_e(r.get('profile'))} · verdict "
                    f"<span class=\"{'pass' if r.get('verdict') == 'pass' else 'fail'}\">{_e(str(r.get('verdict')).upper())}</span></h2>")
        body.append(f'<p class="muted">bundle <code>{_e(b.path)}</code> · source <code>{_e((r.get("source") or {}).get("location"))}</code>'
                    f" · task {_e(r.get('task'))} · accuracy on {_e(data.get('eval_samples'))} samples ({_e(data.get('origin'))})"
                    f" · benchmark input <code>{_e(bench.get('input'))}</code>, {_e(bench.get('threads'))} threads · edgekit {_e(r.get('edgekit_version'))}</p>")
        body.append(scatter_svg(b, colors))
        for t in b.targets:
            body.append(f"<h3>{_e(t['target'])} · {_e(t.get('runtime'))} {_e(t.get('precision'))} on {_e(t.get('device'))}</h3>")
            body.append(latency_svg(t["target"], b.original, t, colors[t["target"]]))
            budgets = "".join(
                f"<li>{_e(c.get('budget'))} {'≥' if str(c.get('budget', '')).startswith('min') else '≤'} {_e(_fmt(c.get('limit'), 'g'))}: "
                f"measured {_e(_fmt(c.get('measured'), '.4f' if c.get('budget') == 'min_cosine' else '.4g'))} "
                + (f"<span class=\"muted\">{'not checked' if c.get('not_checked') else 'not applicable'} ({_e(c.get('reason'))})</span></li>"
                   if c.get("applicable") is False else
                   f"<span class=\"{'pass' if c.get('passed') else 'fail'}\">{'pass' if c.get('passed') else 'FAIL'}</span></li>")
                for c in t.get("budgets") or [] if isinstance(c, dict))
            if budgets:
                body.append(f"<ul>{budgets}</ul>")
            acc = {k: v for k, v in (t.get("accuracy") or {}).items() if k != "per_output"}
            body.append(_settings_html("accuracy", acc))
            body.append(_settings_html("quantization", t.get("quantization")))
            body.append(_settings_html("runtime settings", t.get("runtime_settings")))
            notes = t.get("notes") or []
            if notes:
                body.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
        versions = {k: v for k, v in (b.manifest.get("versions") or {}).items() if v}
        body.append(_settings_html("tool versions", versions))
        if r.get("notes"):
            body.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in r["notes"]) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------ entry points


def render(bundles: Sequence[LoadedBundle], fmt: str = "md", comparison: Comparison | None = None) -> str:
    if fmt == "md":
        return render_markdown(bundles, comparison)
    if fmt == "json":
        return render_json(bundles, comparison)
    if fmt == "html":
        return render_html(bundles, comparison)
    raise UsageError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def format_for(fmt: str | None, output: str | os.PathLike[str] | None) -> str:
    """An explicit --format wins; else the extension of -o (.html, .json, .md); else md."""
    if fmt:
        return fmt
    suffix = Path(output).suffix.lower().lstrip(".") if output else ""
    return {"htm": "html", "html": "html", "json": "json", "md": "md", "markdown": "md"}.get(suffix, "md")


def write_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write through a temporary file beside PATH, then rename: readers never see half a file."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"-o {target}: is a folder; give a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(target, text)


def review(paths: Sequence[str | os.PathLike[str]], fmt: str = "md", baseline: str | os.PathLike[str] | None = None,
           max_regression: float = DEFAULT_MAX_REGRESSION,
           max_cosine_drop: float = DEFAULT_MAX_COSINE_DROP) -> tuple[str, Comparison | None]:
    """Load, compare (when a baseline is given) and render: what `edgekit report` does."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    bundles = load_bundles(paths)
    comparison = None
    if baseline is not None:
        old = load_bundle(baseline)
        comparison = compare(bundles, old, max_regression, max_cosine_drop, baseline_name=str(baseline))
    return render(bundles, fmt, comparison), comparison
