"""Review: read finished bundles and render them for a reviewer, optionally against a baseline.

1. `load_bundle(path)` reads a bundle folder (manifest.json + report.json). A missing path, a folder
   that is not a bundle, unreadable JSON, a manifest format other than `edgekit-bundle/1`, a report
   written by a newer edgekit (major.minor) or one without the structure the renderers rely on
   (`records`, rule 1) is a `UsageError` naming the path.
2. `render(bundles, fmt, comparison)` writes one of three formats:
   - `md`: one table across every bundle, target and profile, fit to paste into a pull request;
   - `json`: every figure and setting of every loaded report (and the comparison);
   - `html`: one self-contained page (inline CSS and SVG, nothing fetched from anywhere) with the
     table, a latency distribution plot per target and an accuracy-vs-latency scatter per bundle.
3. `compare(new, old)` matches targets by (target, profile) and reports p50, p90, size and cosine
   min, old against new. A regression is p50, p90 or size up by more than `max_regression`
   (relative), or cosine min down by more than `max_cosine_drop` (absolute). Targets on one side only
   are notes, never errors.

Where each piece lives: `load` (bundles), `records` (report.json as typed records, checked and converted
once: a missing or non-finite figure is None), `compare` (the comparison and --max-regression), `figures`
(figures formatted for a cell), `rows` (the table rows md and html share), `markdown`, `as_json`, `html`
and `svg` (the charts); this module holds the entry points.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..bundle import write_text_atomic
from ..errors import UsageError
from .as_json import REVIEW_FORMAT, render_json
from .compare import (DEFAULT_MAX_COSINE_DROP, DEFAULT_MAX_REGRESSION, METRICS, Change, Comparison, TargetDiff, compare,
                      parse_fraction)
from .html import render_html
from .load import BUNDLE_FORMAT, LoadedBundle, load_bundle, load_bundles
from .markdown import render_markdown
from .svg import Axis, latency_svg, log_ticks, nice_ticks, scatter_svg

__all__ = ["BUNDLE_FORMAT", "DEFAULT_MAX_COSINE_DROP", "DEFAULT_MAX_REGRESSION", "FORMATS", "METRICS", "REVIEW_FORMAT", "Axis",
           "Change", "Comparison", "LoadedBundle", "TargetDiff", "UsageError", "compare", "format_for", "latency_svg",
           "load_bundle", "load_bundles", "log_ticks", "nice_ticks", "parse_fraction", "render", "render_html", "render_json",
           "render_markdown", "review", "junit", "scatter_svg", "write_atomic"]

FORMATS = ("md", "json", "html")


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


def junit(paths: Sequence[str | os.PathLike[str]]) -> str:
    """One JUnit document for every bundle's budgets (junit rule 5): a project's bundles from a CI matrix."""
    from ..junit import to_junit_many
    from ..report import Report

    bundles = load_bundles(paths)
    return to_junit_many([(b.path.name, Report.from_dict(b.report)) for b in bundles],
                         f"edgekit review of {len(bundles)} bundle(s)")


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
