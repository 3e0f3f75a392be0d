"""HTML: one self-contained page (inline CSS and SVG, nothing fetched from anywhere)."""

from __future__ import annotations

import json
from typing import Any, Sequence

from .. import __version__
from ..stages.benchmark import NOISY_RULE
from .compare import Comparison, change_cells
from .figures import DASH, fmt_num
from .load import LoadedBundle
from .records import BudgetCheck, Entry, TargetRecord
from .rows import GENERATION_COLUMNS, columns, generation_rows, has_top1, noisy_names, rows_of, synthetic_names
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
    generation = generation_rows(bundles)
    if generation:
        body += ["<h2>Generation</h2>", "<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in GENERATION_COLUMNS)
                 + "</tr></thead><tbody>"]
        body += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in generation]
        body.append("</tbody></table>")
    if comparison is not None:
        body.append(_comparison_html(comparison))
    for b in bundles:
        body += _bundle_html(b)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _bundle_html(b: LoadedBundle) -> list[str]:
    """One bundle's section: its heading and figures, the scatter, each target, the tool versions, the notes."""
    r, data, bench = b.record, b.record.data, b.record.benchmark
    colors = {t.target: PALETTE[i % len(PALETTE)] for i, t in enumerate(r.targets)}
    body = [f"<h2>{escape(b.name)} · profile {escape(r.profile)} · verdict "
            f"<span class=\"{'pass' if r.verdict == 'pass' else 'fail'}\">{escape(str(r.verdict).upper())}</span></h2>",
            f'<p class="muted">bundle <code>{escape(b.path)}</code> · source <code>{escape(r.source.location)}</code>'
            f" · task {escape(r.task)} · accuracy on {escape(data.eval_samples)} samples ({escape(data.origin)})"
            f" · benchmark input <code>{escape(bench.input)}</code>, {escape(bench.threads)} threads · edgekit {escape(r.edgekit_version)}</p>",
            scatter_svg(b, colors)]
    for t in r.targets:
        body += _target_html(t, r.original, colors[t.target])
    versions = {k: v for k, v in (b.manifest.get("versions") or {}).items() if v}
    body.append(_settings_html("tool versions", versions))
    if r.notes:
        body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>")
    return body


def _target_html(t: TargetRecord, original: Entry, color: str) -> list[str]:
    """One target: heading, latency plot, budgets, accuracy, quantization and runtime settings, notes."""
    body = [f"<h3>{escape(t.target)} · {escape(t.runtime)} {escape(t.precision)} on {escape(t.device)}</h3>",
            latency_svg(t.target, original, t, color)]
    budgets = "".join(_budget_html(c) for c in t.budgets)
    if budgets:
        body.append(f"<ul>{budgets}</ul>")
    body.append(_settings_html("accuracy", t.accuracy.written))
    body.append(_settings_html("quantization", t.quantization))
    body.append(_settings_html("runtime settings", t.runtime_settings))
    if t.notes:
        body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in t.notes) + "</ul>")
    return body


def _budget_html(c: BudgetCheck) -> str:
    head = (f"<li>{escape(c.budget)} {'≥' if (c.budget or '').startswith('min') else '≤'} {escape(fmt_num(c.limit, 'g'))}: "
            f"measured {escape(fmt_num(c.measured, '.4f' if c.budget == 'min_cosine' else '.4g'))} ")
    if not c.applicable:
        return head + f"<span class=\"muted\">{'not checked' if c.not_checked else 'not applicable'} ({escape(c.reason)})</span></li>"
    return head + f"<span class=\"{'pass' if c.passed else 'fail'}\">{'pass' if c.passed else 'FAIL'}</span></li>"
