"""SVG charts: a latency distribution per target and an accuracy-vs-latency scatter per bundle."""

from __future__ import annotations

import html
import math
import zlib
from dataclasses import dataclass
from typing import Any

from .figures import NOT_MEASURED, fmt_ms
from .load import LoadedBundle
from .records import Entry, TargetRecord

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
ORIGINAL_COLOR = "#555555"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"


def escape(text: Any) -> str:
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
    """A linear or log mapping from data to pixels, and the one way every chart draws its ticks.

    A horizontal axis (x) runs from pixel p0 to p1 left to right; a vertical one (y) from p0 at the
    bottom to p1 at the top. Log scale only when asked and both ends are positive.
    """

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False, vertical: bool = False):
        self.vertical = vertical
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

    def grid(self, across: tuple[float, float], label_at: float, color: str, tick_marks: bool = False) -> list[str]:
        """Per tick: a grid line in `color` across the plot (`across`: from, to, in the other axis' pixels),
        a 5 px tick mark past its end when `tick_marks` (horizontal axis), and the tick's label at
        `label_at` (the y of a horizontal axis' labels, centred; the x of a vertical one's, right-aligned)."""
        a0, a1 = across
        out = []
        for t in self.ticks():
            p, label = self(t), escape(self.label(t))
            if self.vertical:
                out.append(f'<line x1="{a0}" y1="{p:.1f}" x2="{a1}" y2="{p:.1f}" stroke="{color}"/>')
                out.append(f'<text x="{label_at}" y="{p + 4:.1f}" text-anchor="end" fill="#333">{label}</text>')
                continue
            out.append(f'<line x1="{p:.1f}" y1="{a0}" x2="{p:.1f}" y2="{a1}" stroke="{color}"/>')
            if tick_marks:
                out.append(f'<line x1="{p:.1f}" y1="{a1}" x2="{p:.1f}" y2="{a1 + 5}" stroke="#333"/>')
            out.append(f'<text x="{p:.1f}" y="{label_at}" text-anchor="middle" fill="#333">{label}</text>')
        return out

    def line(self, at: float) -> str:
        """The axis itself, at `at` in the other axis' pixels (a horizontal axis' y, a vertical one's x)."""
        if self.vertical:
            return f'<line x1="{at}" y1="{self.p1}" x2="{at}" y2="{self.p0}" stroke="#333"/>'
        return f'<line x1="{self.p0}" y1="{at}" x2="{self.p1}" y2="{at}" stroke="#333"/>'


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{escape(title)}" style="{FONT};font-size:12px">', f"<title>{escape(title)}</title>",
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


@dataclass
class _Series:
    """One lane of the distribution plot: the percentiles (reported, else from the samples; q1 and q3 from
    the samples), the samples sorted and as timed, and the noisy flag."""

    stats: dict[str, float | None]
    samples: list[float]
    raw: list[float]
    noisy: bool


def _series(entry: Entry) -> _Series:
    """What the distribution plot needs: samples when present, the reported percentiles always."""
    samples = sorted(entry.samples)
    stats = {k: getattr(entry.latency, k) for k in ("min", "p50", "p90", "p95", "p99", "max")}
    if samples:
        stats["q1"], stats["q3"] = _percentile(samples, 25), _percentile(samples, 75)
        for k, q in (("min", 0), ("max", 100), ("p50", 50), ("p90", 90), ("p99", 99)):
            if stats.get(k) is None:
                stats[k] = _percentile(samples, q)
    return _Series(stats, samples, entry.samples, entry.noisy)


def latency_svg(name: str, original: Entry, target: TargetRecord, color: str, width: int = 1040) -> str:
    """Original vs artifact: per series a strip of every timed run, a box (quartiles), a p50 bar and p90/p99 ticks.

    Without samples (older reports) the line spans min..max with the reported percentiles marked.
    The axis is logarithmic when the slowest run is more than 20 times the fastest.
    """
    if not target.measured:
        return f'<p class="muted">{escape(name)}: latency {NOT_MEASURED} ({escape(target.not_measured or "device not present")}).</p>'
    series = [("original", _series(original), ORIGINAL_COLOR), (name, _series(target), color)]
    values = [v for _, s, _ in series for v in list(s.stats.values()) + s.samples if v is not None and v > 0]
    if not values:
        return f'<p class="muted">{escape(name)}: no latency figures in the report.</p>'
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
    out.append(f'<text x="{left}" y="18" font-weight="600">{escape(title)}</text>')
    bottom = top + lane * len(series)
    legend = "dots: timed runs · box: p25–p75 · bar: p50 · ticks: p90, p99 · line: min–max"
    out.append(f'<text x="{width - 8}" y="{bottom + 36}" text-anchor="end" font-size="11" fill="#666">{escape(legend)}</text>')
    out += x.grid((top, bottom), bottom + 18, "#e6e6e6", tick_marks=True)
    out.append(x.line(bottom))
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{bottom + 36}" text-anchor="middle" fill="#333">'
               f'latency per inference, ms{" (log scale)" if x.log else ""}</text>')
    for i, (label, s, col) in enumerate(series):
        out += _lane(x, label, s, col, top + lane * i + lane / 2, lane, (left, width - right))
    out.append("</svg>")
    return "\n".join(out)


def _lane(x: Axis, label: str, s: _Series, col: str, cy: float, lane: float, plot: tuple[float, float]) -> list[str]:
    """One series of the latency plot, centred at y = `cy`: every timed run as a dot (at most ~1500), the
    min-max line, the p25-p75 box, the p50 bar, p90/p99 ticks, and its figures right of the plot."""
    left, right = plot
    out: list[str] = []
    st = s.stats
    out.append(f'<text x="{left - 10}" y="{cy + 4:.1f}" text-anchor="end" font-weight="600" fill="{col}">{escape(label)}</text>')
    raw = s.raw
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
    summary = f'p50 {fmt_ms(st.get("p50"))} · p90 {fmt_ms(st.get("p90"))} · p99 {fmt_ms(st.get("p99"))} ms'
    detail = f'{len(raw)} runs' if raw else "percentiles only (no samples in report)"
    if s.noisy:
        detail += " · NOISY"
    out.append(f'<text x="{right + 12}" y="{cy - 2:.1f}" fill="#222">{escape(summary)}</text>')
    out.append(f'<text x="{right + 12}" y="{cy + 13:.1f}" font-size="11" fill="{"#b00020" if s.noisy else "#666"}">'
               f'{escape(detail)}</text>')
    return out


def scatter_svg(bundle: LoadedBundle, colors: dict[str, str], width: int = 1040, height: int = 420) -> str:
    """Accuracy (cosine min) against latency (p50): the original at cosine 1.0, one point per target,
    with the min_cosine budget drawn horizontally and max_latency_ms (a p90 budget) vertically."""
    points = []
    report = bundle.record
    if report.original.latency.p50 is not None:
        points.append(("original", report.original.latency.p50, 1.0, ORIGINAL_COLOR, ""))
    for t in report.targets:
        p50, cos = t.latency.p50, t.accuracy.cosine_min
        if p50 is not None and cos is not None:
            points.append((t.target, p50, cos, colors.get(t.target, PALETTE[0]), t.verdict or ""))
    min_cos = sorted({v for t in report.targets if (v := t.budget_limit("min_cosine")) is not None})
    max_lat = sorted({v for t in report.targets if (v := t.budget_limit("max_latency_ms")) is not None})
    title = f"{bundle.name} ({report.profile}): accuracy vs latency"
    if not points:
        return f'<p class="muted">{escape(title)}: no figures to plot.</p>'
    left, right, top, bottom = 80, 270, 34, 52
    xs = [p[1] for p in points] + max_lat
    ys = [p[2] for p in points] + min_cos
    x_hi = max(xs) * 1.15 or 1.0
    y_lo, y_hi = min(ys), 1.0
    span = (y_hi - y_lo) or 0.01
    y_lo, y_hi = y_lo - span * 0.12, y_hi + span * 0.08
    x = Axis(0.0, x_hi, left, width - right)
    y = Axis(y_lo, y_hi, height - bottom, top, vertical=True)
    out = _svg_open(width, height, title)
    out.append(f'<text x="{left}" y="20" font-weight="600">{escape(title)}</text>')
    out += x.grid((top, height - bottom), height - bottom + 17, "#eeeeee")
    out += y.grid((left, width - right), left - 6, "#eeeeee")
    out += [x.line(height - bottom), y.line(left)]
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" text-anchor="middle" fill="#333">p50 latency, ms (batch 1)</text>')
    out.append(f'<text transform="translate(18 {(top + height - bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" fill="#333">'
               f'cosine min vs original</text>')
    for v in min_cos:
        py = y(v)
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{width - right}" y2="{py:.1f}" stroke="#b00020" stroke-dasharray="6 4" stroke-width="1.5"/>')
        out.append(f'<text x="{width - right - 4}" y="{py + 14:.1f}" text-anchor="end" font-size="11" fill="#b00020">'
                   f'{escape(f"min_cosine {v:g} (budget)")}</text>')
    for v in max_lat:
        px = x(v)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{height - bottom}" stroke="#b00020" stroke-dasharray="6 4" stroke-width="1.5"/>')
        out.append(f'<text x="{px - 4:.1f}" y="{top + 12}" text-anchor="end" font-size="11" fill="#b00020">'
                   f'{escape(f"max_latency_ms {v:g} (p90 budget)")}</text>')
    out += _point_labels(points, x, y, height - bottom, width - right + 10)
    out.append("</svg>")
    return "\n".join(out)


def _point_labels(points: list[tuple[str, float, float, str, str]], x: Axis, y: Axis, floor: float, lx: float) -> list[str]:
    """The scatter's points, each labelled in the right margin (from x = `lx`) in the order of the points,
    the labels pushed apart so none overlap and kept above `floor`; a failing target's point is ringed red."""
    out: list[str] = []
    placed = sorted(((y(p[2]), p) for p in points), key=lambda item: item[0])
    label_y: list[float] = []
    for py, _ in placed:
        label_y.append(max(py, label_y[-1] + 15) if label_y else py)
    overflow = (label_y[-1] - floor) if label_y else 0
    if overflow > 0:
        label_y = [v - overflow for v in label_y]
    for (py, (name, px_val, cos, col, verdict)), ly in zip(placed, label_y):
        px = x(px_val)
        ring = ' stroke="#b00020" stroke-width="2.5"' if verdict == "fail" else ' stroke="#ffffff" stroke-width="1"'
        shape = (f'<rect x="{px - 5:.1f}" y="{py - 5:.1f}" width="10" height="10" fill="{col}"{ring}/>' if name == "original"
                 else f'<circle cx="{px:.1f}" cy="{py:.1f}" r="6" fill="{col}"{ring}/>')
        out.append(shape)
        out.append(f'<line x1="{px + 7:.1f}" y1="{py:.1f}" x2="{lx - 3}" y2="{ly:.1f}" stroke="{col}" stroke-opacity="0.35"/>')
        text = f"{name}: {fmt_ms(px_val)} ms, cosine {cos:.4f}" + (" FAIL" if verdict == "fail" else "")
        out.append(f'<text x="{lx}" y="{ly + 4:.1f}" font-size="11" fill="{col}">{escape(text)}</text>')
    return out
