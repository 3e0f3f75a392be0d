"""The report: one object, written as report.json (for scripts) and report.md (for reviewers)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .judge import Check
from . import runtimes
from .stages.benchmark import Latency, Throughput, noisy_note
from .stages.verify import Fidelity
from .table import Table

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
NO_BENCH = "benchmark skipped (--no-bench)"
# Why a verdict reached without real data is provisional (report.md, report.json, the exit summary, JUnit).
PROVISIONAL = "reached on synthetic inputs, not real data; give --data to make it final"
NOT_MEASURED = "not measured"
# the keys latency_json adds to an entry; Report.from_dict takes them back out of `original`
LATENCY_ENTRY_KEYS = ("latency_measured", "latency_not_measured", "latency_ms", "first_inference_ms", "latency_runs",
                      "latency_cv", "latency_noisy", "latency_samples_ms")


def _mb(size_bytes: int) -> str:
    mb = size_bytes / 1e6
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


def _timing(lat: Latency | None, speedup: str | None) -> list[str]:
    """The p50, p90, p99 and speedup cells of the figures table; "not measured" without latency."""
    if lat is None:
        return [NOT_MEASURED] * 3 + ["—"]
    return [f"{lat.p50:.2f}", f"{lat.p90:.2f}", f"{lat.p99:.2f}", str(speedup)]


def throughput_json(by_batch: dict[int, Throughput]) -> dict[str, Any]:
    return {str(b): t.to_dict() for b, t in sorted(by_batch.items())}


def latency_json(lat: Latency | None, not_measured: str = "") -> dict[str, Any]:
    if lat is None:  # the device is not on this machine: nothing was timed
        return {"latency_measured": False, "latency_not_measured": not_measured, "latency_ms": None,
                "first_inference_ms": None, "latency_runs": 0, "latency_cv": None, "latency_noisy": False,
                "latency_samples_ms": []}
    return {
        "latency_ms": {k: getattr(lat, k) for k in LATENCY_KEYS},
        "first_inference_ms": lat.first_ms,
        "latency_runs": lat.runs,
        "latency_cv": lat.cv,
        "latency_noisy": lat.noisy,
        "latency_samples_ms": [round(x, 4) for x in lat.samples_ms],
    }


def _float(value: Any) -> Any:
    """A figure read back from report.json: null (how `clean_json` writes NaN) or missing reads NaN."""
    return math.nan if value is None else value


def latency_from_json(entry: dict[str, Any]) -> Latency | None:
    """The inverse of `latency_json`: None when the entry has no `latency_ms` (not measured).

    Old reports lack some figures: a missing percentile reads NaN, a missing count 0, missing samples [].
    """
    figures = entry.get("latency_ms")
    if not isinstance(figures, dict):
        return None
    samples = entry.get("latency_samples_ms")
    return Latency(**{k: _float(figures.get(k)) for k in LATENCY_KEYS}, cv=_float(entry.get("latency_cv")),
                   runs=entry.get("latency_runs", 0), first_ms=_float(entry.get("first_inference_ms")),
                   noisy=bool(entry.get("latency_noisy")), samples_ms=list(samples) if isinstance(samples, list) else [])


def throughput_from_json(by_batch: Any) -> dict[int, Throughput]:
    """The inverse of `throughput_json`; anything but a dict of batch -> figures reads as no throughput."""
    if not isinstance(by_batch, dict):
        return {}
    names = {f.name for f in fields(Throughput)}
    return {int(b): Throughput(**{k: v for k, v in t.items() if k in names}) for b, t in by_batch.items()
            if isinstance(t, dict)}


def _fidelity_from_json(accuracy: Any) -> Fidelity:
    """The inverse of `Fidelity.to_dict`: a figure the report lacks reads NaN (required) or None (optional)."""
    given = accuracy if isinstance(accuracy, dict) else {}
    required = ("cosine_min", "cosine_mean", "max_abs_error", "snr_db", "samples")
    values = {f.name: given[f.name] for f in fields(Fidelity) if f.name in given and f.name not in required}
    return Fidelity(**{k: _float(given.get(k)) for k in required}, **values)


def _generation_timing(timing: dict | None) -> tuple[str, str, str, str]:
    """TTFT, TPOT, tokens/s and TTFT at other prompt lengths of one row of the generation table."""
    if not timing:
        return "—", "—", "—", "—"
    ttft, tpot = timing["ttft_ms"], timing.get("tpot_ms")
    others = ", ".join(f"{o['prompt_tokens']}: {o['ttft_ms']['p50']:.1f}" for o in timing.get("ttft_at", []))
    return (f"{ttft['p50']:.1f} / {ttft['p90']:.1f}", f"{tpot['p50']:.2f} / {tpot['p90']:.2f}" if tpot else "—",
            f"{timing['tokens_per_s']:.1f}" if timing.get("tokens_per_s") else "—", others or "—")


def _interval(interval) -> str:
    return f"[{interval[0]:.4g}, {interval[1]:.4g}]"


def _with_interval(value: float, interval, spec: str) -> str:
    """A figure and, when there is one, its 95% interval in brackets."""
    text = f"{value:{spec}}"
    return f"{text} [{interval[0]:{spec}}, {interval[1]:{spec}}]" if interval else text


def _check_from_json(check: dict[str, Any]) -> Check:
    """The inverse of `Check.to_dict`."""
    return Check(str(check.get("budget", "")), check.get("limit", math.nan), check.get("measured"), check.get("passed"),
                 applicable=check.get("applicable", True) is not False, reason=str(check.get("reason") or ""),
                 original=check.get("original"), artifact=check.get("artifact"),
                 not_checked=bool(check.get("not_checked")),
                 interval=tuple(check["ci95"]) if isinstance(check.get("ci95"), list) and len(check["ci95"]) == 2 else None,
                 undecided=bool(check.get("undecided")), gating=check.get("gating", True) is not False)


@dataclass
class TargetResult:
    target: str
    profile: str
    runtime: str
    device: str
    precision: str
    artifact: str  # relative to the bundle
    size_bytes: int
    latency: Latency | None  # None: not measured (the device is not here; `not_measured` says why)
    speedup_p50: float | None
    accuracy: Fidelity
    checks: list[Check]
    verdict: str
    load_ms: float | None
    quantization: dict[str, Any] = field(default_factory=dict)
    runtime_settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    throughput: dict[int, Throughput] = field(default_factory=dict)
    memory_mb: float | None = None  # resident memory added by loading and first-serving the artifact
    not_measured: str = ""  # why latency was not measured ("" when it was)
    verified_on: str = ""  # the runtime and device the accuracy figures come from
    static_shapes: dict[str, Any] | None = None  # input -> fixed shape and where each dimension came from
    precompiled: dict[str, Any] | None = None  # the device's compiled blob and the versions it is bound to
    candidates: list[dict[str, Any]] = field(default_factory=list)  # INT8 and FP32 timed side by side (candidates.py)
    out_of_domain: dict[str, Any] | None = None  # text models: fidelity on the built-in out-of-domain set
    generation: dict[str, Any] | None = None  # generative models: time to first token, per output token, tokens/s

    @property
    def measured(self) -> bool:
        return self.latency is not None

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.static_shapes is not None:
            extra["static_shapes"] = self.static_shapes
        if self.precompiled is not None:
            extra["precompiled"] = self.precompiled
        if self.candidates:
            extra["candidates"] = self.candidates
        if self.out_of_domain is not None:
            extra["out_of_domain"] = self.out_of_domain
        if self.generation is not None:
            extra["generation"] = self.generation
        return {
            "target": self.target,
            "profile": self.profile,
            "runtime": self.runtime,
            "device": self.device,
            "precision": self.precision,
            "artifact": self.artifact,
            "size_bytes": self.size_bytes,
            **({"latency_measured": True} if self.latency is not None else {}),
            **latency_json(self.latency, self.not_measured),
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
            "verified_on": self.verified_on,
            **extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetResult:
        """The inverse of `to_dict`; fields an older report lacks take their defaults."""
        return cls(
            target=d["target"], profile=str(d.get("profile") or ""), runtime=str(d.get("runtime") or ""),
            device=str(d.get("device") or ""), precision=str(d.get("precision") or ""), artifact=str(d.get("artifact") or ""),
            size_bytes=d.get("size_bytes"), latency=latency_from_json(d), speedup_p50=d.get("speedup_p50"),
            accuracy=_fidelity_from_json(d.get("accuracy")),
            checks=[_check_from_json(c) for c in d.get("budgets") or [] if isinstance(c, dict)],
            verdict=str(d.get("verdict") or ""), load_ms=d.get("load_ms"),
            quantization=d.get("quantization") or {}, runtime_settings=d.get("runtime_settings") or {},
            notes=list(d.get("notes") or []), build_seconds=d.get("build_seconds", 0.0),
            throughput=throughput_from_json(d.get("throughput")), memory_mb=d.get("memory_mb"),
            not_measured=str(d.get("latency_not_measured") or ""), verified_on=str(d.get("verified_on") or ""),
            static_shapes=d.get("static_shapes"), precompiled=d.get("precompiled"),
            candidates=list(d.get("candidates") or []), out_of_domain=d.get("out_of_domain"), generation=d.get("generation"))


@dataclass
class FailedTarget:
    """A target that could not be built: its row in the report, with the error (the others are kept: issue 19)."""

    target: str
    runtime: str
    device: str
    error: str
    exit_code: int  # 2: the input or environment; 3: a failure inside edgekit or a runtime

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": self.runtime, "device": self.device, "error": self.error,
                "exit_code": self.exit_code}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FailedTarget":
        return cls(str(d.get("target", "")), str(d.get("runtime", "")), str(d.get("device", "")), str(d.get("error", "")),
                   int(d.get("exit_code", 3)) if isinstance(d.get("exit_code"), int) else 3)


@dataclass
class Report:
    edgekit_version: str
    source: dict[str, Any]
    task: str
    profile: str
    original: dict[str, Any]
    original_latency: Latency | None  # None: the benchmark was skipped (--no-bench)
    data: dict[str, Any]
    benchmark: dict[str, Any]
    targets: list[TargetResult]
    notes: list[str] = field(default_factory=list)
    bundle: Path | None = None  # where the bundle was written
    original_throughput: dict[int, Throughput] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # the build cache: where, and what was reused or stored
    failed: list[FailedTarget] = field(default_factory=list)  # targets that could not be built
    original_generation: dict[str, Any] | None = None  # generative models: the original's generation timings

    @property
    def verdict(self) -> str:
        return "pass" if all(t.verdict == "pass" for t in self.targets) and not self.failed else "fail"

    @property
    def exit_code(self) -> int:
        """The worst outcome: a target that failed to build (2 or 3), else 1 for a missed budget, else 0."""
        worst = max((f.exit_code for f in self.failed), default=0)
        return max(worst, 0 if all(t.verdict == "pass" for t in self.targets) else 1)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def provisional(self) -> str:
        """Why the verdict is provisional ("" when it is not): it was reached on synthetic inputs."""
        return PROVISIONAL if self.data.get("synthetic") else ""

    @property
    def unmeasured(self) -> list[dict[str, str]]:
        """Targets whose latency was not measured because their device is not here, with the reason."""
        return [{"target": t.target, "reason": t.not_measured} for t in self.targets
                if not t.measured and t.not_measured != NO_BENCH]

    @property
    def benchmarked(self) -> bool:
        return self.original_latency is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgekit_version": self.edgekit_version,
            "verdict": self.verdict,
            "provisional": self.provisional,
            "source": self.source,
            "task": self.task,
            "profile": self.profile,
            "original": {**self.original, **latency_json(self.original_latency, "" if self.benchmarked else NO_BENCH),
                         "throughput": throughput_json(self.original_throughput),
                         **({"generation": self.original_generation} if self.original_generation is not None else {})},
            "data": self.data,
            "benchmark": self.benchmark,
            "targets": [t.to_dict() for t in self.targets],
            "unmeasured": self.unmeasured,
            "notes": self.notes,
            "cache": self.cache,
            **({"failed": [f.to_dict() for f in self.failed]} if self.failed else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """The inverse of `to_dict` (report.json back to a Report).

        Rules: `verdict` and `unmeasured` are not read (they follow from the targets); the latency and
        throughput keys of `original` become `original_latency` and `original_throughput`; a field an
        older report lacks takes its default (empty, NaN or None), so old bundles still load.
        """
        original = d.get("original") or {}
        return cls(
            edgekit_version=str(d.get("edgekit_version") or ""), source=d.get("source") or {}, task=str(d.get("task") or ""),
            profile=str(d.get("profile") or ""),
            original={k: v for k, v in original.items() if k not in LATENCY_ENTRY_KEYS and k not in ("throughput", "generation")},
            original_latency=latency_from_json(original), data=d.get("data") or {}, benchmark=d.get("benchmark") or {},
            targets=[TargetResult.from_dict(t) for t in d.get("targets") or []], notes=list(d.get("notes") or []),
            original_throughput=throughput_from_json(original.get("throughput")), cache=d.get("cache") or {},
            failed=[FailedTarget.from_dict(f) for f in d.get("failed") or [] if isinstance(f, dict)],
            original_generation=original.get("generation"))

    def _task_markdown(self) -> list[str]:
        """The task metrics section: labelled metrics (original, artifact, drop) and agreement with the original."""
        table = Table(["target", "metric", "n", "original", "artifact", "drop"], align="llrrrr")
        for t in self.targets:
            a = t.accuracy
            for name, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("word_accuracy", "word accuracy (1 − WER)"),
                                ("map", "mAP (IoU 0.5:0.95)")):
                m = (a.task_metrics or {}).get(name)
                if m:
                    table.add(t.target, label, str(m.get("n", "—")), _with_interval(m["original"], m.get("original_ci95"), ".4f"),
                              _with_interval(m["artifact"], m.get("artifact_ci95"), ".4f"),
                              _with_interval(m["drop"], m.get("drop_ci95"), "+.4f"))
                if m and name == "map":  # a detector's AP at IoU 0.5 beside its mAP (tasks/detection.py rule 5)
                    table.add(t.target, "AP at IoU 0.5", str(m.get("n", "—")), f"{m['ap50_original']:.4f}",
                              f"{m['ap50_artifact']:.4f}", f"{m['ap50_original'] - m['ap50_artifact']:+.4f}")
            retrieval = f"retrieval agreement @{a.retrieval_k or 5}"
            intervals = a.intervals or {}
            for name, value, label in (("top1_agreement", a.top1_agreement, "top-1 agreement"),
                                       ("top5_agreement", a.top5_agreement, "top-5 agreement"),
                                       ("retrieval_agreement_at_5", a.retrieval_agreement_at_5, retrieval),
                                       ("box_agreement", getattr(a, "box_agreement", None), "box agreement (F1)"),
                                       ("mask_miou", getattr(a, "mask_miou", None), "mask mean IoU"),
                                       ("depth_agreement", getattr(a, "depth_agreement", None),
                                        "depth within 1.25x (δ1)")):
                if value is not None:
                    table.add(t.target, f"{label} with the original", str(a.samples), "—",
                              _with_interval(value, intervals.get(name), ".1%"), "—")
            spoken = getattr(a, "transcripts", None)
            if spoken:  # CTC recognisers: greedy transcripts against the original's (tasks/sequence.py rule 5)
                table.add(t.target, "transcript token error rate against the original", str(a.samples), "—",
                          f"{spoken['token_error_rate']:.1%} ({spoken['identical']:.0%} of clips identical)", "—")
                if "word_error_rate" in spoken:
                    table.add(t.target, "transcript word error rate against the original", str(a.samples), "—",
                              f"{spoken['word_error_rate']:.1%}", "—")
        if not table.rows:
            return []
        labelled = self.data.get("labelled")
        head = (f"{self.data.get('eval_samples')} labelled evaluation samples; drop = original − artifact, on the same "
                "samples; [95% interval]."
                if labelled else "No labels in the data: accuracy and macro-F1 are not measured; agreement with the original "
                "is; [95% interval].")
        return ["", "## Task metrics", "", head, "", table.to_markdown()]

    def _failed_markdown(self) -> list[str]:
        """Targets that could not be built: each with its error; the others are in the bundle."""
        if not self.failed:
            return []
        table = Table(["target", "runtime", "device", "error", "exit"], align="lllll")
        for f in self.failed:
            table.add(f.target, f.runtime, f.device, f.error, str(f.exit_code))
        return ["", "## Targets that failed to build", "", "Not in the bundle; every other target is. The verdict is `fail`.",
                "", table.to_markdown()]

    def _out_of_domain_markdown(self) -> list[str]:
        """Fidelity on text of kinds the compile did not calibrate on (data rule 6), apart from the evaluation's."""
        rows = [t for t in self.targets if t.out_of_domain]
        if not rows:
            return []
        table = Table(["target", "n", "cosine min", "cosine mean", "agreement with the original"], align="lrrrr")
        for t in rows:
            o = t.out_of_domain
            agreement = o.get("retrieval_agreement_at_5", o.get("top1_agreement"))
            table.add(t.target, str(o["n"]), f"{o['cosine_min']:.4f}", f"{o['cosine_mean']:.4f}",
                      "—" if agreement is None else f"{agreement:.1%}")
        return ["", "## Out-of-domain fidelity", "",
                "Built-in text of other kinds (software documentation, contracts, science, chat, logs, leaflets, finance),"
                " never calibrated on; it does not decide the verdict.", "", table.to_markdown()]

    def _device_markdown(self) -> list[str]:
        """Where accuracy was verified and why latency was not measured; static shapes; precompiled blobs."""
        lines = []
        if self.unmeasured:
            lines += ["", "## Not measured here", "",
                      "The device is not on this machine: each artifact was built, and its accuracy verified by running the "
                      "same file on the CPU; latency is measured where the device is.", ""]
            lines += [f"- {t.target}: accuracy from {t.verified_on}; latency not measured: {t.not_measured}"
                      for t in self.targets if not t.measured]
        static = [t for t in self.targets if t.static_shapes]
        if static:
            lines += ["", "## Static shapes", ""]
            for t in static:
                parts = [f"`{name}` {entry['shape']} ({', '.join(dict.fromkeys(w for w in entry['from'] if w))})"
                         for name, entry in t.static_shapes.items()]
                lines.append(f"- {t.target}: " + "; ".join(parts))
        blobs = [t for t in self.targets if t.precompiled]
        if blobs:
            lines += ["", "## Precompiled blobs", ""]
            for t in blobs:
                b = t.precompiled
                if b.get("written"):
                    versions = ", ".join(f"{k} {v}" for k, v in b.items() if k not in ("written", "file", "portable", "note"))
                    lines.append(f"- {t.target}: `{b['file']}` — {versions}; {b.get('note', '')}")
                else:
                    lines.append(f"- {t.target}: {b.get('reason', 'not written')}")
        return lines

    def to_markdown(self) -> str:
        """report.md: the summary, the figures table, then one section per topic that has something to say."""
        lines = self._summary_markdown() + ["", self._figures_table().to_markdown()] + self._generation_markdown() + self._failed_markdown()
        lines += self._cold_start_markdown() + self._throughput_markdown() + self._recovery_markdown()
        lines += (self._budgets_markdown() + self._task_markdown() + self._out_of_domain_markdown() + self._device_markdown()
                  + self._notes_markdown())
        return "\n".join(lines) + "\n"

    def _summary_markdown(self) -> list[str]:
        """The title and the lines that say what was built, from what data, and how it was timed."""
        lines = [
            f"# edgekit report: {self.source.get('location')}",
            "",
            f"- task: `{self.task}` · profile: `{self.profile}` · verdict: **{self.verdict.upper()}**"
            + (f" (**provisional**: {self.provisional})" if self.provisional else "")
            + (f" on what was measured; latency **not measured** for {', '.join(u['target'] for u in self.unmeasured)} "
               "(device not on this machine)" if self.unmeasured else ""),
            f"- original: {self.original['runtime']} {self.original['precision']}",
            f"- accuracy data: {self.data['origin']} — {self.data['eval_samples']} evaluation, "
            f"{self.data['calibration_samples']} calibration samples (disjoint), seed {self.data['seed']}",
            (f"- latency: batch 1, input {self.benchmark['input']}, {self.benchmark['threads']} threads, "
             "original and artifacts interleaved in one run" if self.benchmarked
             else f"- latency: **not measured**: {NO_BENCH}; this bundle's figures are accuracy and size only"),
        ]
        reused = [e.get("label") or e["stage"] for e in self.cache.get("events", []) if e["outcome"] == "hit"]
        damaged = [e for e in self.cache.get("events", []) if e["outcome"] == "damaged"]
        if not self.cache.get("enabled", True):
            lines.append("- build cache: off (--no-cache)")
        elif self.cache:
            lines.append(f"- build cache: {'reused ' + ', '.join(reused) if reused else 'nothing reused'}"
                         + (f"; {len(damaged)} damaged entr{'y' if len(damaged) == 1 else 'ies'} rebuilt" if damaged else "")
                         + f" (`{self.cache.get('dir')}`)")
        if self.data.get("synthetic"):
            lines.append("- **WARNING: accuracy figures come from synthetic inputs, not real data** (give --data)")
        return lines

    def _figures_table(self) -> Table:
        """Size, batch-1 latency, speedup, accuracy and verdict: the original first, then each target."""
        table = Table(["target", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms", "speedup p50", "cosine min",
                       "cosine mean", "max abs err", "verdict"], align="lllrrrrrrrrl")
        o = self.original_latency
        table.add("original", self.original["runtime"], self.original["precision"], _mb(self.original["size_bytes"]),
                  *_timing(o, "1.00×"), "—", "—", "—", "—")
        for t in self.targets:
            a = t.accuracy
            table.add(t.target, t.runtime, t.precision, _mb(t.size_bytes),
                      *_timing(t.latency, None if t.latency is None else f"{t.speedup_p50:.2f}×"),
                      f"{a.cosine_min:.4f}", f"{a.cosine_mean:.4f}", f"{a.max_abs_error:.3g}",
                      "✅ pass" if t.verdict == "pass" else "❌ FAIL")
        return table

    def _generation_markdown(self) -> list[str]:
        """Generative models: the generation table (tasks/generation.py), the original first."""
        if not any(t.accuracy.generation for t in self.targets):
            return []
        table = Table(["target", "TTFT p50 / p90 ms", "TPOT p50 / p90 ms", "tokens/s", "TTFT at other prompt lengths",
                       "size MB", "perplexity", "ppl Δ", "next-token agreement", "KL mean", "greedy identical", "verdict"],
                      align="lrrrlrrrrrrl")
        first = next(t.accuracy.generation for t in self.targets if t.accuracy.generation)
        table.add("original", *_generation_timing(self.original_generation), _mb(self.original["size_bytes"]),
                  f"{first['ppl_original']:.3f}", "—", "—", "—", "—", "—")
        for t in self.targets:
            g = t.accuracy.generation or {}
            table.add(t.target, *_generation_timing(t.generation), _mb(t.size_bytes),
                      f"{g.get('ppl_artifact', float('nan')):.3f}", f"{g.get('ppl_increase', float('nan')):+.2%}",
                      "—" if t.accuracy.token_agreement is None else f"{t.accuracy.token_agreement:.1%}",
                      f"{g.get('kl_mean', float('nan')):.4f}",
                      f"{g.get('greedy_identical', float('nan')):.0%} (prefix {g.get('greedy_prefix_mean', float('nan')):.1f} "
                      f"of {g.get('new_tokens', 0)}" + (f"; chrF {g['chrf']:.1f}" if "chrf" in g else "") + ")",
                      "✅ pass" if t.verdict == "pass" else "❌ FAIL")
        timing = self.original_generation or next((t.generation for t in self.targets if t.generation), None) or {}
        head = (f"Generation: batch 1, greedy, a prompt of {timing.get('prompt_tokens', '?')} tokens and "
                f"{timing.get('new_tokens', '?')} new tokens, interleaved with the original; perplexity and agreement "
                f"teacher-forced on {first.get('positions', '?')} held-out token positions.") if timing else \
            "Generation: not timed (--no-bench or no device here); perplexity and agreement teacher-forced on held-out text."
        return ["", "## Generation", "", head, "", table.to_markdown()]

    def _cold_start_markdown(self) -> list[str]:
        """Load/compile time, first inference and resident memory added, per target."""
        o = self.original_latency
        table = Table(["target", "load/compile ms", "first inference ms", "resident memory added MB"], align="lrrr")
        table.add("original", "—", "—" if o is None or o.first_ms != o.first_ms else f"{o.first_ms:.1f}", "—")
        for t in self.targets:
            if t.latency is not None and t.load_ms is not None:
                table.add(t.target, f"{t.load_ms:.0f}", f"{t.latency.first_ms:.1f}",
                          "—" if t.memory_mb is None else f"{t.memory_mb:.0f}")
            else:
                table.add(t.target, *[NOT_MEASURED] * 3)
        return ["", "## Cold start and memory", "", table.to_markdown()]

    def _throughput_markdown(self) -> list[str]:
        """Samples per second at each batch size, when any batch above 1 was measured."""
        batches = sorted({b for t in self.targets for b in t.throughput} | set(self.original_throughput))
        if not any(b > 1 for b in batches):
            return []

        def cells(by_batch: dict[int, Throughput]) -> list[str]:
            return ["—" if (item := by_batch.get(b)) is None or item.per_second is None else f"{item.per_second:.1f}"
                    for b in batches]

        table = Table(["target"] + [f"batch {b}" for b in batches], align="l" + "r" * len(batches))
        table.add("original", *cells(self.original_throughput))
        for t in self.targets:
            table.add(t.target, *cells(t.throughput))
        return ["", "## Throughput (samples per second)", "", table.to_markdown()]

    def _recovery_markdown(self) -> list[str]:
        """Targets whose INT8 accuracy was recovered: what was tried, what it gave, which layers stayed FP32."""
        recovered = [(t.target, t.quantization["recovery"]) for t in self.targets if t.quantization.get("recovery")]
        if not recovered:
            return []
        table = Table(["target", "method", "result", "figure before → after", "layers kept FP32", "INT8 share", "attempts"],
                      align="llllrrr")
        for name, r in recovered:
            table.add(name, r["method"], "met the budget" if r["recovered"] else "FAILED: " + r["note"],
                      f"{r.get('metric', 'cosine_min')} {r['score_before']:.5f} → {r['score_after']:.5f}", f"{r['kept_fp32_count']} of {r['candidates']}",
                      f"{r['int8_fraction']:.0%}", str(len(r["attempts"])))
        lines = ["", "## Accuracy recovery", "", table.to_markdown()]
        for name, r in recovered:
            if r["kept_fp32"]:
                shown = ", ".join(f"`{n}`" for n in r["kept_fp32"][:12])
                more = f" and {len(r['kept_fp32']) - 12} more" if len(r["kept_fp32"]) > 12 else ""
                lines.append(f"- {name} kept FP32: {shown}{more}")
        return lines

    def _budgets_markdown(self) -> list[str]:
        """Each budget of each target: limit, measured figure and pass/fail, or why it does not count."""
        lines = ["", "## Budgets", ""]
        for t in self.targets:
            for c in t.checks:
                if c.budget == "require_measured":
                    lines.append(f"- {t.target}: latency measured on the device (--require-measured) — FAIL: {c.reason}")
                    continue
                head = f"- {t.target}: {c.budget} {c.operator} {c.limit:g} — "
                if c.not_checked:
                    lines.append(head + (f"**not checked**: {NO_BENCH}, does not count" if not self.benchmarked
                                         else "**not checked**: latency not measured here (see below), does not count"))
                    continue
                if not c.applicable:
                    lines.append(head + f"**not applicable** ({c.reason}): not measured, does not count")
                    continue
                figures = f" (original {c.original:.4g}, artifact {c.artifact:.4g})" if c.original is not None else ""
                figures += f", 95% interval {_interval(c.interval)}" if c.interval is not None else ""
                outcome = ("pass" if c.passed else "FAIL") if c.gating else f"{'met' if c.passed else 'missed'}, {c.reason}"
                if c.undecided:
                    outcome = f"**undecided: too few samples** — {outcome}" + (" (allowed by the profile)" if c.passed else "")
                lines.append(head + f"measured {c.measured:.4g}{figures} — {outcome}")
        return lines

    def _notes_markdown(self) -> list[str]:
        """The report's and targets' notes, how each target runs, and the noisy-latency warning."""
        o = self.original_latency
        noisy = noisy_note([("original", o)] + [(t.target, t.latency) for t in self.targets])
        notes = list(self.notes) + [f"{t.target}: {n}" for t in self.targets for n in t.notes]
        notes += [f"{t.target}: {line}" for t in self.targets for line in _how_it_runs(t)]
        if noisy:
            notes.append(f"{noisy}; rerun on a quieter machine")
        return ["", "## Notes", ""] + [f"- {n}" for n in notes] if notes else []


def _how_it_runs(t: TargetResult) -> list[str]:
    """What a reviewer needs to read the figures: the steps that built the artifact, and what changes how it
    computes or runs (the runtime says what of its settings matters: `Runtime.how_it_runs`)."""
    lines = []
    if t.quantization.get("outlier_channels"):
        lines.append(t.quantization["outlier_channels"])
    runtime = runtimes.find(t.runtime)
    lines += runtime.how_it_runs(t.runtime_settings) if runtime is not None else []
    if t.quantization.get("steps"):
        lines.append(f"built by the steps: {t.quantization['steps']}")
    return lines
