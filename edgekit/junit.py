"""JUnit XML of a report's verdict, so CI systems show each missed budget natively.

Rules:
1. One <testsuite> per target (name `edgekit.<target>`), one <testcase> per budget of that target:
   classname `edgekit.<target>`, name the budget (e.g. `min_cosine`, `max_drop.accuracy`).
2. A missed budget has a <failure> with the measured value and the limit; a budget that is not
   applicable (e.g. accuracy without labels), or not checked (latency of a target whose device is not
   here), is <skipped> with the reason.
3. A target that was not built (its build failed; the others are in the bundle) is a <testsuite> of one
   <testcase> named `build` with an <error> giving the failure.
4. The file is written atomically (a temporary file beside it, then `os.replace`): a CI job never
   reads half a file, and it is written whatever the verdict.
5. `edgekit report --junit` writes one document for many bundles (a project built over a CI matrix): each
   model's suites are named `edgekit.<model>.<target>`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from .bundle import write_text_atomic
from .errors import UsageError
from .judge import Check


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def _case(suite: ET.Element, target: str, check: Check) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"edgekit.{target}", name=check.budget, time="0")
    if not check.applicable:
        ET.SubElement(case, "skipped", message=f"{'not checked' if check.not_checked else 'not applicable'}: {check.reason}")
    elif not check.gating:
        ET.SubElement(case, "skipped", message=f"measured {_figure(check.measured)}: {check.reason}")
    elif not check.passed:
        message = check.reason or f"measured {_figure(check.measured)}, limit {check.operator} {_figure(check.limit)}"
        failure = ET.SubElement(case, "failure", message=message, type="BudgetMissed")
        detail = f"{target}: {check.budget} {check.operator} {check.limit:g}: measured {_figure(check.measured)}"
        if check.original is not None:
            detail += f" (original {_figure(check.original)}, artifact {_figure(check.artifact)})"
        failure.text = detail


def to_junit(report) -> str:
    """The report's budgets as a JUnit XML document (a string)."""
    return to_junit_many([("", report)], f"edgekit {report.source.get('location')}")


def to_junit_many(reports, title: str) -> str:
    """Rule 5: (model name, report) pairs as one JUnit document; a named model's suites are `edgekit.<model>.<target>`."""
    root = ET.Element("testsuites", name=title)
    totals = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
    for model, report in reports:
        _report_suites(root, report, f"edgekit.{model}." if model else "edgekit.", totals)
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _report_suites(root: ET.Element, report, prefix: str, totals: dict) -> None:
    for target in report.targets:
        checks = target.checks
        counts = {"tests": len(checks),
                  "failures": sum(1 for c in checks if c.applicable and c.gating and not c.passed),
                  "skipped": sum(1 for c in checks if not c.applicable or not c.gating)}
        suite = ET.SubElement(root, "testsuite", name=f"{prefix}{target.target}", errors="0",
                              time=f"{target.build_seconds:.3f}", **{k: str(v) for k, v in counts.items()})
        properties = ET.SubElement(suite, "properties")
        provisional = (("provisional", report.provisional),) if report.provisional else ()
        for name, value in (("profile", target.profile), ("runtime", target.runtime), ("precision", target.precision),
                            ("verdict", target.verdict)) + provisional:
            ET.SubElement(properties, "property", name=name, value=str(value))
        for check in checks:
            _case(suite, f"{prefix}{target.target}"[len("edgekit."):], check)
        for key in counts:
            totals[key] += counts[key]
    for failed in getattr(report, "failed", []):  # a target that was not built: one test case, in error
        suite = ET.SubElement(root, "testsuite", name=f"{prefix}{failed.target}", tests="1", failures="0", skipped="0",
                              errors="1", time="0")
        case = ET.SubElement(suite, "testcase", classname=f"{prefix}{failed.target}", name="build", time="0")
        ET.SubElement(case, "error", message=failed.error, type="BuildFailed").text = (
            f"{failed.target} ({failed.runtime} {failed.device}) was not built: {failed.error} (exit {failed.exit_code})")
        totals["tests"] += 1
        totals["errors"] += 1


def write_junit(report, path: str | os.PathLike[str], text: str | None = None) -> Path:
    """Write `to_junit(report)` (or `text`) to PATH atomically."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--junit {target}: is a folder; give a file path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--junit {target}: cannot create its folder ({exc.strerror or exc})") from exc
    try:
        return write_text_atomic(target, text if text is not None else to_junit(report))
    except OSError as exc:
        raise UsageError(f"--junit {target}: cannot write it ({exc.strerror or exc})") from exc
