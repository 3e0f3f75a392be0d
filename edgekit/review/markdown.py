"""Markdown: one table across every bundle, target and profile, fit to paste into a pull request."""

from __future__ import annotations

from typing import Sequence

from ..stages.benchmark import NOISY_RULE
from .compare import Comparison, change_cells
from .figures import DASH
from .load import LoadedBundle
from .rows import has_top1, noisy_names, rows_of, synthetic_names


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict_md(verdict: str) -> str:
    return {"pass": "✅ pass", "fail": "❌ FAIL", "": DASH}.get(verdict, _md_cell(verdict))


def render_markdown(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    top1 = has_top1(bundles)
    head = ["model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms",
            "speedup p50", "cosine min"] + (["top-1 agreement"] if top1 else []) + ["verdict"]
    align = ["---"] * 5 + ["---:"] * 6 + (["---:"] if top1 else []) + ["---"]
    lines = ["## edgekit review", "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in rows_of(bundles):
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
    synthetic = synthetic_names(bundles)
    if synthetic:
        lines.append(f"- **accuracy from synthetic inputs, not real data:** {', '.join(synthetic)}")
    noisy = noisy_names(bundles)
    if noisy:
        lines.append(f"- ⚠ noisy latency ({NOISY_RULE}), do not trust small differences: {', '.join(noisy)}")
    if comparison is not None:
        lines += ["", _comparison_markdown(comparison)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _comparison_markdown(comparison: Comparison) -> str:
    status = ("❌ **regression** beyond the threshold" if comparison.regressed else "✅ no regression beyond the threshold")
    lines = [f"### Against baseline `{comparison.baseline}`", "",
             f"{status} (latency p50/p90 or size up by more than {comparison.max_regression:.1%}, "
             f"cosine min down by more than {comparison.max_cosine_drop:g})", ""]
    if comparison.pairs:
        lines += ["| target | profile | metric | baseline | new | change | |", "|---|---|---|---:|---:|---:|---|"]
        for p in comparison.pairs:
            for c in p.changes:
                old, new, change = change_cells(c)
                flag = "❌ **regression**" if c.regression else ""
                metric = f"**{c.metric}**" if c.regression else c.metric
                lines.append(f"| {_md_cell(p.target)} | {_md_cell(p.profile)} | {metric} | {old} | {new} | {change} | {flag} |")
    else:
        lines.append("No target is in both the baseline and the new bundle(s).")
    if comparison.notes:
        lines += [""] + [f"- {_md_cell(n)}" for n in comparison.notes]
    return "\n".join(lines)
