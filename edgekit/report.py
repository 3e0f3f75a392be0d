"""The report: one object, written as report.json (for scripts) and report.md (for reviewers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge import Check
from .stages.benchmark import Latency
from .stages.verify import Fidelity

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")


def _mb(size_bytes: int) -> str:
    mb = size_bytes / 1e6
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


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
            "original": {**self.original, **latency_json(self.original_latency)},
            "data": self.data,
            "benchmark": self.benchmark,
            "targets": [t.to_dict() for t in self.targets],
            "notes": self.notes,
        }

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
        lines += ["", "## Budgets", ""]
        for t in self.targets:
            for c in t.checks:
                mark = "pass" if c.passed else "FAIL"
                op = "≥" if c.budget.startswith("min") else "≤"
                lines.append(f"- {t.target}: {c.budget} {op} {c.limit:g} — measured {c.measured:.4g} — {mark}")
        extra = [(t.target, t) for t in self.targets if t.accuracy.top1_agreement is not None]
        if extra:
            lines += ["", "## Classifier agreement", ""]
            lines += [f"- {name}: top-1 agreement with the original {t.accuracy.top1_agreement:.1%}" for name, t in extra]
        noisy = [name for name, lat in [("original", o)] + [(t.target, t.latency) for t in self.targets] if lat.noisy]
        notes = list(self.notes) + [f"{t.target}: {n}" for t in self.targets for n in t.notes]
        if noisy:
            notes.append(f"latency spread too wide to trust (coefficient of variation > 25%) for: {', '.join(noisy)}; rerun on a quieter machine")
        if notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"
