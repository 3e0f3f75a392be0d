"""HTML: one self-contained page (inline CSS and SVG, nothing fetched from anywhere)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from .. import __version__
from ..stages.benchmark import NOISY_RULE
from .compare import Comparison, change_cells
from .figures import DASH, fmt_num
from .load import LoadedBundle
from .rows import columns, has_top1, noisy_names, rows_of, synthetic_names
from .svg import PALETTE, escape, latency_svg, scatter_svg

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
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v)}</dd>"
                   for k, v in settings.items())
    return f"<details><summary>{escape(title)}</summary><dl>{rows}</dl></details>"


def _table_html(bundles: Sequence[LoadedBundle]) -> str:
    top1 = has_top1(bundles)
    out = ["<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in columns(top1)) + "</tr></thead><tbody>"]
    for r in rows_of(bundles):
        noisy = ' <span class="fail" title="noisy latency">⚠</span>' if r.noisy else ""
        nums = [r.size, r.p50, r.p90, r.p99, r.speedup, r.cosine] + ([r.top1] if top1 else [])
        cells = "".join(f"<td>{escape(c)}</td>" for c in (r.model, r.target, r.profile, r.runtime, r.precision))
        cells += "".join(f'<td class="n">{escape(c)}{noisy if i == 1 else ""}</td>' for i, c in enumerate(nums))
        verdict = {"pass": '<td class="pass">pass</td>', "fail": '<td class="fail">FAIL</td>', "": f"<td>{DASH}</td>"}.get(
            r.verdict, f"<td>{escape(r.verdict)}</td>")
        out.append(f'<tr{" class=original" if r.target == "original" else ""}>{cells}{verdict}</tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _comparison_html(c: Comparison) -> str:
    status = ("bad", "Regression beyond the threshold") if c.regressed else ("good", "No regression beyond the threshold")
    out = [f"<h2>Against baseline <code>{escape(c.baseline)}</code></h2>",
           f'<div class="{status[0]}"><strong>{escape(status[1])}</strong> (latency p50/p90 or size up by more than '
           f"{escape(f'{c.max_regression:.1%}')}, cosine min down by more than {escape(f'{c.max_cosine_drop:g}')})"
           + (f": {escape(c.summary())}" if c.regressed else "") + "</div>"]
    if c.pairs:
        out.append("<table><thead><tr><th>target</th><th>profile</th><th>metric</th><th>baseline</th><th>new</th>"
                   "<th>change</th><th></th></tr></thead><tbody>")
        for p in c.pairs:
            for ch in p.changes:
                old, new, change = change_cells(ch)
                cls = ' class="regression"' if ch.regression else ""
                flag = '<span class="fail">REGRESSION</span>' if ch.regression else ""
                out.append(f"<tr{cls}><td>{escape(p.target)}</td><td>{escape(p.profile)}</td><td>{escape(ch.metric)}</td>"
                           f'<td class="n">{escape(old)}</td><td class="n">{escape(new)}</td><td class="n">{escape(change)}</td><td>{flag}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append('<p class="muted">No target is in both the baseline and the new bundle(s).</p>')
    if c.notes:
        out.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in c.notes) + "</ul>")
    return "\n".join(out)


def render_html(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    names = ", ".join(dict.fromkeys(b.name for b in bundles))
    title = f"edgekit review: {names}"
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="muted">{len(bundles)} bundle(s) · rendered by edgekit {escape(__version__)} · batch-1 latency, '
            "original and artifacts interleaved in one run per bundle</p>"]
    synthetic, noisy = synthetic_names(bundles), noisy_names(bundles)
    if synthetic:
        body.append(f'<div class="warn"><strong>Accuracy from synthetic inputs, not real data:</strong> {escape(", ".join(synthetic))}</div>')
    if noisy:
        body.append(f'<div class="warn"><strong>Noisy latency</strong> ({escape(NOISY_RULE)}), do not trust small '
                    f"differences: {escape(', '.join(noisy))}</div>")
    body.append(_table_html(bundles))
    if comparison is not None:
        body.append(_comparison_html(comparison))
    for b in bundles:
        r = b.report
        colors = {t["target"]: PALETTE[i % len(PALETTE)] for i, t in enumerate(b.targets)}
        data, bench = r.get("data") or {}, r.get("benchmark") or {}
        body.append(f"<h2>{escape(b.name)} · profile {escape(r.get('profile'))} · verdict "
                    f"<span class=\"{'pass' if r.get('verdict') == 'pass' else 'fail'}\">{escape(str(r.get('verdict')).upper())}</span></h2>")
        body.append(f'<p class="muted">bundle <code>{escape(b.path)}</code> · source <code>{escape((r.get("source") or {}).get("location"))}</code>'
                    f" · task {escape(r.get('task'))} · accuracy on {escape(data.get('eval_samples'))} samples ({escape(data.get('origin'))})"
                    f" · benchmark input <code>{escape(bench.get('input'))}</code>, {escape(bench.get('threads'))} threads · edgekit {escape(r.get('edgekit_version'))}</p>")
        body.append(scatter_svg(b, colors))
        for t in b.targets:
            body.append(f"<h3>{escape(t['target'])} · {escape(t.get('runtime'))} {escape(t.get('precision'))} on {escape(t.get('device'))}</h3>")
            body.append(latency_svg(t["target"], b.original, t, colors[t["target"]]))
            budgets = "".join(
                f"<li>{escape(c.get('budget'))} {'≥' if str(c.get('budget', '')).startswith('min') else '≤'} {escape(fmt_num(c.get('limit'), 'g'))}: "
                f"measured {escape(fmt_num(c.get('measured'), '.4f' if c.get('budget') == 'min_cosine' else '.4g'))} "
                + (f"<span class=\"muted\">{'not checked' if c.get('not_checked') else 'not applicable'} ({escape(c.get('reason'))})</span></li>"
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
                body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
        versions = {k: v for k, v in (b.manifest.get("versions") or {}).items() if v}
        body.append(_settings_html("tool versions", versions))
        if r.get("notes"):
            body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in r["notes"]) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
