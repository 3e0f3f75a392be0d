"""Markdown: one table across every bundle, target and profile, fit to paste into a pull request."""

from __future__ import annotations

from typing import Sequence

from ..stages.benchmark import NOISY_RULE
from ..table import Table, escape_cell
from .compare import Comparison, change_cells
from .figures import DASH
from .load import LoadedBundle
from .rows import GENERATION_COLUMNS, columns, generation_rows, has_top1, noisy_names, rows_of, synthetic_names


def _verdict_md(verdict: str) -> str:
    return {"pass": "✅ pass", "fail": "❌ FAIL", "": DASH}.get(verdict, escape_cell(verdict))


def render_markdown(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    lines = ["## edgekit review", "", _table(bundles).to_markdown(), ""]
    verdicts = ", ".join(f"{b.name} ({b.record.profile}): **{(b.record.verdict or '?').upper()}**" for b in bundles)
    lines.append(f"- verdict: {verdicts}")
    for b in bundles:
        r, bench, data = b.record, b.record.benchmark, b.record.data
        lines.append(f"- {escape_cell(b.name)}: `{r.source.location}`, task `{r.task}`, "
                     f"batch {bench.batch}, benchmark input `{bench.input}`, {bench.threads} threads, "
                     f"accuracy on {data.eval_samples} samples ({data.origin}), edgekit {r.edgekit_version}"
                     + (f"; timed on {escape_cell(bench.machine.cpu)}, {bench.machine.cores} cores" if bench.machine.cpu else ""))
    synthetic = synthetic_names(bundles)
    if synthetic:
        lines.append(f"- **accuracy from synthetic inputs, not real data:** {', '.join(synthetic)}")
    noisy = noisy_names(bundles)
    if noisy:
        lines.append(f"- ⚠ noisy latency ({NOISY_RULE}), do not trust small differences: {', '.join(noisy)}")
    generation = generation_rows(bundles)
    if generation:  # generative models: time to first token, tokens/s, perplexity and agreement, the original first
        table = Table(list(GENERATION_COLUMNS), align="llrrrrrrrl")
        for row in generation:
            table.add(*[escape_cell(c) for c in row])
        lines += ["", "### Generation", "", table.to_markdown()]
    if comparison is not None:
        lines += ["", _comparison_markdown(comparison)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(bundles: Sequence[LoadedBundle]) -> Table:
    """The review table: names left, figures right, a ⚠ after a noisy p50."""
    top1 = has_top1(bundles)
    table = Table(columns(top1), align="l" * 5 + "r" * (7 if top1 else 6) + "l")
    for r in rows_of(bundles):
        cells = [r.model, r.target, r.profile, r.runtime, r.precision, r.size, r.p50 + (" ⚠" if r.noisy else ""),
                 r.p90, r.p99, r.speedup, r.cosine] + ([r.top1] if top1 else [])
        table.add(*(escape_cell(c) for c in cells), _verdict_md(r.verdict))
    return table


def _comparison_markdown(comparison: Comparison) -> str:
    status = ("❌ **regression** beyond the threshold" if comparison.regressed else "✅ no regression beyond the threshold")
    lines = [f"### Against baseline `{comparison.baseline}`", "",
             f"{status} (latency p50/p90 or size up by more than {comparison.max_regression:.1%}, "
             f"cosine min down by more than {comparison.max_cosine_drop:g})", ""]
    if comparison.pairs:
        table = Table(["target", "profile", "metric", "baseline", "new", "change", ""], align="lllrrrl")
        for p in comparison.pairs:
            for c in p.changes:
                flag = "❌ **regression**" if c.regression else ""
                metric = f"**{c.metric}**" if c.regression else c.metric
                table.add(escape_cell(p.target), escape_cell(p.profile), metric, *change_cells(c), flag)
        lines.append(table.to_markdown())
    else:
        lines.append("No target is in both the baseline and the new bundle(s).")
    if comparison.notes:
        lines += [""] + [f"- {escape_cell(n)}" for n in comparison.notes]
    return "\n".join(lines)
