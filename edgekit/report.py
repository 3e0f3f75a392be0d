"""The report: one object, written as report.json (for scripts) and report.md (for reviewers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge import Check
from .stages.benchmark import Latency, Throughput
from .stages.verify import Fidelity

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")


def _mb(size_bytes: int) -> str:
    mb = size_bytes / 1e6
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


def throughput_json(by_batch: dict[int, Throughput]) -> dict[str, Any]:
    return {str(b): t.to_dict() for b, t in sorted(by_batch.items())}


def latency_json(lat: Latency) -> dict[str, Any]:
    return {
        "latency_ms": {k: getattr(lat, k) for k in LATENCY_KEYS},
        "first_inference_ms": lat.first_ms,
        "latency_runs": lat.runs,
        "latency_cv": lat.cv,
        "latency_noisy": lat.noisy,
        "latency_samples_ms": [round(x, 4) for x in lat.samples_ms],
    }


@dataclass
class TargetResult:
    target: str
    profile: str
    runtime: str
    device: str
    precision: str
    artifact: str  # relative to the bundle
    size_bytes: int
    latency: Latency
    speedup_p50: float
    accuracy: Fidelity
    checks: list[Check]
    verdict: str
    load_ms: float
    quantization: dict[str, Any] = field(default_factory=dict)
    runtime_settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    throughput: dict[int, Throughput] = field(default_factory=dict)
    memory_mb: float | None = None  # resident memory added by loading and first-serving the artifact

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "profile": self.profile,
            "runtime": self.runtime,
            "device": self.device,
            "precision": self.precision,
            "artifact": self.artifact,
            "size_bytes": self.size_bytes,
            **latency_json(self.latency),
            "load_ms": self.load_ms,
            "memory_mb": self.memory_mb,
            "throughput": throughput_json(self.throughput),
            "speedup_p50": self.speedup_p50,
            "accuracy": self.accuracy.to_dict(),
            "budgets": [c.to_dict() for c in self.checks],
            "verdict": self.verdict,
            "quantization": self.quantization,
            "runtime_settings": self.runtime_settings,
            "notes": self.notes,
            "build_seconds": self.build_seconds,
        }


@dataclass
class Report:
    edgekit_version: str
    source: dict[str, Any]
    task: str
    profile: str
    original: dict[str, Any]
    original_latency: Latency
    data: dict[str, Any]
    benchmark: dict[str, Any]
    targets: list[TargetResult]
    notes: list[str] = field(default_factory=list)
    bundle: Path | None = None  # where the bundle was written
    original_throughput: dict[int, Throughput] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "pass" if all(t.verdict == "pass" for t in self.targets) else "fail"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgekit_version": self.edgekit_version,
            "verdict": self.verdict,
            "source": self.source,
            "task": self.task,
            "profile": self.profile,
            "original": {**self.original, **latency_json(self.original_latency),
                         "throughput": throughput_json(self.original_throughput)},
            "data": self.data,
            "benchmark": self.benchmark,
            "targets": [t.to_dict() for t in self.targets],
            "notes": self.notes,
        }

    def _task_markdown(self) -> list[str]:
        """The task metrics section: labelled metrics (original, artifact, drop) and agreement with the original."""
        rows = []
        for t in self.targets:
            a = t.accuracy
            for name, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
                m = (a.task_metrics or {}).get(name)
                if m:
                    rows.append(f"| {t.target} | {label} | {m['original']:.4f} | {m['artifact']:.4f} | {m['drop']:+.4f} |")
            retrieval = f"retrieval agreement @{a.retrieval_k or 5}"
            for value, label in ((a.top1_agreement, "top-1 agreement"), (a.top5_agreement, "top-5 agreement"),
                                 (a.retrieval_agreement_at_5, retrieval)):
                if value is not None:
                    rows.append(f"| {t.target} | {label} with the original | — | {value:.1%} | — |")
        if not rows:
            return []
        labelled = self.data.get("labelled")
        head = (f"{self.data.get('eval_samples')} labelled evaluation samples; drop = original − artifact."
                if labelled else "No labels in the data: accuracy and macro-F1 are not measured; agreement with the original is.")
        return ["", "## Task metrics", "", head, "", "| target | metric | original | artifact | drop |",
                "|---|---|---:|---:|---:|"] + rows

    def to_markdown(self) -> str:
        o = self.original_latency
        lines = [
            f"# edgekit report: {self.source.get('location')}",
            "",
            f"- task: `{self.task}` · profile: `{self.profile}` · verdict: **{self.verdict.upper()}**",
            f"- original: {self.original['runtime']} {self.original['precision']}",
            f"- accuracy data: {self.data['origin']} — {self.data['eval_samples']} evaluation, "
            f"{self.data['calibration_samples']} calibration samples (disjoint), seed {self.data['seed']}",
            f"- latency: batch 1, input {self.benchmark['input']}, {self.benchmark['threads']} threads, "
            "original and artifacts interleaved in one run",
        ]
        if self.data.get("synthetic"):
            lines.append("- **WARNING: accuracy figures come from synthetic inputs, not real data** (give --data)")
        lines += [
            "",
            "| target | runtime | precision | size MB | p50 ms | p90 ms | p99 ms | speedup p50 | cosine min | cosine mean | max abs err | verdict |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| original | {self.original['runtime']} | {self.original['precision']} | {_mb(self.original['size_bytes'])} | "
            f"{o.p50:.2f} | {o.p90:.2f} | {o.p99:.2f} | 1.00× | — | — | — | — |",
        ]
        for t in self.targets:
            a, lat = t.accuracy, t.latency
            lines.append(
                f"| {t.target} | {t.runtime} | {t.precision} | {_mb(t.size_bytes)} | {lat.p50:.2f} | {lat.p90:.2f} | "
                f"{lat.p99:.2f} | {t.speedup_p50:.2f}× | {a.cosine_min:.4f} | {a.cosine_mean:.4f} | {a.max_abs_error:.3g} | "
                f"{'✅ pass' if t.verdict == 'pass' else '❌ FAIL'} |"
            )
        lines += ["", "## Cold start and memory", "",
                  "| target | load/compile ms | first inference ms | resident memory MB |", "|---|---:|---:|---:|",
                  f"| original | — | {'—' if o.first_ms != o.first_ms else f'{o.first_ms:.1f}'} | — |"]
        lines += [f"| {t.target} | {t.load_ms:.0f} | {t.latency.first_ms:.1f} | "
                  f"{'—' if t.memory_mb is None else f'{t.memory_mb:.0f}'} |" for t in self.targets]
        batches = sorted({b for t in self.targets for b in t.throughput} | set(self.original_throughput))
        if any(b > 1 for b in batches):
            def cell(tp: dict, b: int) -> str:
                item = tp.get(b)
                return "—" if item is None or item.per_second is None else f"{item.per_second:.1f}"

            lines += ["", "## Throughput (samples per second)", "",
                      "| target | " + " | ".join(f"batch {b}" for b in batches) + " |",
                      "|---|" + "---:|" * len(batches),
                      "| original | " + " | ".join(cell(self.original_throughput, b) for b in batches) + " |"]
            lines += ["| " + t.target + " | " + " | ".join(cell(t.throughput, b) for b in batches) + " |" for t in self.targets]
        lines += ["", "## Budgets", ""]
        for t in self.targets:
            for c in t.checks:
                head = f"- {t.target}: {c.budget} {c.operator} {c.limit:g} — "
                if not c.applicable:
                    lines.append(head + f"**not applicable** ({c.reason}): not measured, does not count")
                    continue
                figures = f" (original {c.original:.4g}, artifact {c.artifact:.4g})" if c.original is not None else ""
                lines.append(head + f"measured {c.measured:.4g}{figures} — {'pass' if c.passed else 'FAIL'}")
        lines += self._task_markdown()
        noisy = [name for name, lat in [("original", o)] + [(t.target, t.latency) for t in self.targets] if lat.noisy]
        notes = list(self.notes) + [f"{t.target}: {n}" for t in self.targets for n in t.notes]
        if noisy:
            notes.append(f"latency spread too wide to trust (coefficient of variation > 25%) for: {', '.join(noisy)}; rerun on a quieter machine")
        if notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"
