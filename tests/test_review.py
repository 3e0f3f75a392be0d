"""`edgekit report`: review, compare and render bundles. One real compile per module; variants are copies
with an edited report.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cli_helpers import assert_usage_error

from edgekit import review
from edgekit.cli import main
from edgekit.stages import benchmark

QUICK_PROFILE = (
    'description = "tests: balanced, short benchmark"\n'
    'precision = "int8"\n'
    "fp32_candidate = false\n"
    "[budgets]\nmin_cosine = 0.9\n"
    "[data]\ncalibration_samples = 16\neval_samples = 8\nseed = 0\n"
    "[benchmark]\nsequence_length = 32\nmin_runs = 10\nmin_seconds = 0.2\nmax_seconds = 5.0\n"
)
TARGETS = ("cpu", "intel-cpu")


@pytest.fixture(scope="module")
def bundle(cnn_onnx, tmp_path_factory) -> Path:
    """A real bundle: the tiny CNN for cpu and intel-cpu, short benchmark."""
    import edgekit
    from edgekit.progress import NullProgress

    root = tmp_path_factory.mktemp("review")
    profile = root / "quick.toml"
    profile.write_text(QUICK_PROFILE)
    out = root / "cnn"
    edgekit.compile(str(cnn_onnx), targets=list(TARGETS), shapes=["input=1,3,32,32"], profile=str(profile), output=out,
                    progress=NullProgress())
    return out


def variant(bundle: Path, dest: Path, edit=None) -> Path:
    """A copy of the bundle, its report.json passed through `edit(report)` (which changes it in place)."""
    shutil.copytree(bundle, dest)
    if edit is not None:
        path = dest / "report.json"
        report = json.loads(path.read_text())
        edit(report)
        path.write_text(json.dumps(report, indent=2))
    return dest


def report_cli(*args: str):
    return CliRunner().invoke(main, ["report", *args], catch_exceptions=False)


def table_rows(markdown: str) -> list[list[str]]:
    """The data rows of the first markdown table, as cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def slower(factor: float, targets=TARGETS):
    def edit(report):
        for t in report["targets"]:
            if t["target"] in targets:
                for key in ("p50", "p90"):
                    t["latency_ms"][key] *= factor
    return edit


# ------------------------------------------------------------------ the real bundle


def test_report_json_carries_latency_samples(bundle):
    report = json.loads((bundle / "report.json").read_text())
    for entry in [report["original"], *report["targets"]]:
        samples = entry["latency_samples_ms"]
        assert len(samples) == entry["latency_runs"] > 0
        assert min(samples) == pytest.approx(entry["latency_ms"]["min"], abs=1e-4)
        assert max(samples) == pytest.approx(entry["latency_ms"]["max"], abs=1e-4)
        assert all(round(s, 4) == s for s in samples)


def test_stats_keeps_the_samples():
    lat = benchmark._stats([3.0, 1.0, 2.0], first_ms=5.0)
    assert lat.samples_ms == [3.0, 1.0, 2.0]  # in the order they were timed


def test_markdown_table(bundle):
    result = report_cli(str(bundle))
    assert result.exit_code == 0, result.output
    report = json.loads((bundle / "report.json").read_text())
    rows = table_rows(result.stdout)
    assert [r[1] for r in rows] == ["original", *TARGETS]
    header = result.stdout.splitlines()[2]
    for column in ("model", "target", "profile", "runtime", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms",
                   "speedup p50", "cosine min", "verdict"):
        assert f"| {column} |" in header
    assert "top-1" not in header  # a CNN feature map has no top-1 agreement
    by_target = {r[1]: r for r in rows}
    for t in report["targets"]:
        row = by_target[t["target"]]
        assert row[0] == "cnn.onnx" and row[2] == "quick" and row[3] == t["runtime"] and row[4] == "int8"
        assert row[10] == f"{t['accuracy']['cosine_min']:.4f}"
        assert row[9] == f"{t['speedup_p50']:.2f}×"
        assert row[-1] == "✅ pass"
    assert by_target["original"][3:5] == ["onnxruntime", "fp32"]
    assert "synthetic" in result.stdout


def test_markdown_flags_noisy_latency_and_top1(bundle, tmp_path):
    def edit(report):
        report["original"]["latency_noisy"] = False
        for t in report["targets"]:
            t["latency_noisy"] = t["target"] == "intel-cpu"
            t["accuracy"]["top1_agreement"] = 0.875
    noisy = variant(bundle, tmp_path / "noisy", edit)
    text = report_cli(str(noisy)).stdout
    line = next(line for line in text.splitlines() if "noisy latency" in line)
    assert "cnn.onnx/intel-cpu" in line and "cnn.onnx/cpu" not in line and "original" not in line
    assert "| top-1 agreement |" in text
    assert all(r[11] == "87.5%" for r in table_rows(text) if r[1] != "original")

    def quiet(report):
        for entry in [report["original"], *report["targets"]]:
            entry["latency_noisy"] = False
    assert "noisy" not in report_cli(str(variant(bundle, tmp_path / "quiet", quiet))).stdout


def test_several_bundles_and_profiles_in_one_table(bundle, tmp_path):
    def fast(report):
        report["profile"] = "fast"
        for t in report["targets"]:
            t["profile"] = "fast"
    other = variant(bundle, tmp_path / "fast", fast)
    same = variant(bundle, tmp_path / "again")
    rows = table_rows(report_cli(str(bundle), str(other), str(same)).stdout)
    assert len(rows) == 3 * (1 + len(TARGETS))
    assert {(r[0], r[2]) for r in rows} == {("cnn.onnx (cnn)", "quick"), ("cnn.onnx", "fast"), ("cnn.onnx (again)", "quick")}


def test_json_has_every_figure(bundle):
    result = report_cli(str(bundle), "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    report = json.loads((bundle / "report.json").read_text())
    assert data["format"] == "edgekit-review/1"
    assert data["comparison"] is None
    (entry,) = data["bundles"]
    assert entry["report"] == report
    assert entry["manifest"]["format"] == "edgekit-bundle/1" and entry["manifest"]["versions"]["onnxruntime"]
    assert entry["files"]
    assert entry["report"]["targets"][0]["latency_samples_ms"]


def test_html_is_one_self_contained_file(bundle, tmp_path):
    out = tmp_path / "deep" / "review.html"
    result = report_cli(str(bundle), "-o", str(out))  # format from the extension
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert [p.name for p in out.parent.iterdir()] == ["review.html"]  # no temp file left behind
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<svg") == 1 + len(TARGETS)  # one scatter per bundle, one latency plot per target
    assert text.count("<svg") == text.count("</svg>")
    without_xmlns = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_xmlns and "https://" not in without_xmlns
    for banned in ("<script", "<link", "<img", "@import", "url(", "<iframe"):
        assert banned not in text.lower(), banned
    for name in TARGETS:
        assert f">{name}<" in text
    assert "min_cosine 0.9 (budget)" in text  # the budget line of the scatter
    assert "cosine min vs original" in text and "p50 latency, ms" in text  # axis labels
    assert "percentiles only" not in text  # the real bundle has samples


def test_html_falls_back_to_percentiles_and_draws_latency_budget(bundle, tmp_path):
    def edit(report):
        for entry in [report["original"], *report["targets"]]:
            del entry["latency_samples_ms"]
        for t in report["targets"]:
            t["budgets"].append({"budget": "max_latency_ms", "limit": 25.0, "measured": t["latency_ms"]["p90"], "passed": True})
    old = variant(bundle, tmp_path / "old", edit)
    text = report_cli(str(old), "-f", "html").stdout
    assert text.count("percentiles only (no samples in report)") == 2 * len(TARGETS)
    assert "max_latency_ms 25 (p90 budget)" in text
    assert text.count("<svg") == 1 + len(TARGETS)


def test_html_escapes_text(bundle, tmp_path):
    def edit(report):
        report["targets"][0]["target"] = "<script>alert(1)</script>"
        report["source"]["location"] = "/models/a&b<x>.onnx"
    odd = variant(bundle, tmp_path / "odd", edit)
    text = report_cli(str(odd), "-f", "html").stdout
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a&amp;b&lt;x&gt;.onnx" in text


def test_failed_verdict_is_not_an_exit_code(bundle, tmp_path):
    def edit(report):
        report["verdict"] = "fail"
        report["targets"][0]["verdict"] = "fail"
    result = report_cli(str(variant(bundle, tmp_path / "failed", edit)))
    assert result.exit_code == 0
    assert "❌ FAIL" in result.stdout


def test_output_file_is_replaced_atomically(bundle, tmp_path):
    out = tmp_path / "review.md"
    out.write_text("old content")
    assert report_cli(str(bundle), "-o", str(out)).exit_code == 0
    assert out.read_text().startswith("## edgekit review")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["review.md"]
    result = report_cli(str(bundle), "-o", str(tmp_path / "r.txt"), "-f", "json")  # --format wins over the extension
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.txt").read_text())["bundles"]


def test_report_json_path_is_accepted(bundle):
    assert report_cli(str(bundle / "report.json")).exit_code == 0


# ------------------------------------------------------------------ baseline


def test_unchanged_baseline_exits_0(bundle, tmp_path):
    old = variant(bundle, tmp_path / "old")
    result = report_cli(str(bundle), "--baseline", str(old))
    assert result.exit_code == 0, result.output
    assert "no regression" in result.stdout
    assert "regression beyond" not in result.stderr
    for name in TARGETS:
        for metric in ("p50_ms", "p90_ms", "size_bytes", "cosine_min"):
            assert f"| {name} | quick | {metric} |" in result.stdout


def test_latency_regression_exits_1_and_is_named(bundle, tmp_path):
    new = variant(bundle, tmp_path / "new", slower(1.5, targets=("cpu",)))
    result = report_cli(str(new), "--baseline", str(bundle))
    assert result.exit_code == 1, result.output
    assert "cpu/quick p50_ms +50.0%" in result.stderr and "cpu/quick p90_ms +50.0%" in result.stderr
    assert "intel-cpu/quick" not in result.stderr
    assert "| cpu | quick | **p50_ms** |" in result.stdout and "❌ **regression**" in result.stdout
    assert "| intel-cpu | quick | p50_ms |" in result.stdout
    data = json.loads(report_cli(str(new), "--baseline", str(bundle), "-f", "json").stdout)
    assert data["comparison"]["regressed"] is True
    pairs = {p["target"]: p for p in data["comparison"]["targets"]}
    assert pairs["cpu"]["regressed"] and not pairs["intel-cpu"]["regressed"]
    p50 = next(c for c in pairs["cpu"]["changes"] if c["metric"] == "p50_ms")
    assert p50["relative"] == pytest.approx(0.5) and p50["regression"] is True
    html_text = report_cli(str(new), "--baseline", str(bundle), "-f", "html").stdout
    assert html_text.count('class="regression"') == 2 and "REGRESSION" in html_text


def test_threshold_option(bundle, tmp_path):
    new = variant(bundle, tmp_path / "new", slower(1.08))
    assert report_cli(str(new), "--baseline", str(bundle)).exit_code == 1  # default 5%
    assert report_cli(str(new), "--baseline", str(bundle), "--max-regression", "10%").exit_code == 0
    assert report_cli(str(new), "--baseline", str(bundle), "--max-regression", "0.1").exit_code == 0
    assert report_cli(str(new), "--baseline", str(bundle), "--max-regression", "0.07").exit_code == 1


def test_accuracy_and_size_regressions(bundle, tmp_path):
    def worse(report):
        t = report["targets"][1]
        t["accuracy"]["cosine_min"] -= 0.01
        t["size_bytes"] = int(t["size_bytes"] * 1.2)
    new = variant(bundle, tmp_path / "new", worse)
    result = report_cli(str(new), "--baseline", str(bundle))
    assert result.exit_code == 1
    assert "intel-cpu/quick size_bytes +20.0%" in result.stderr
    assert "intel-cpu/quick cosine_min -0.0100" in result.stderr
    assert "cpu/quick" not in result.stderr.replace("intel-cpu/quick", "")


def test_different_target_sets_are_notes(bundle, tmp_path):
    def only_cpu(report):
        report["targets"] = [t for t in report["targets"] if t["target"] == "cpu"]
    old = variant(bundle, tmp_path / "old", only_cpu)
    result = report_cli(str(bundle), "--baseline", str(old))
    assert result.exit_code == 0, result.output
    assert "- intel-cpu (profile quick): not in baseline" in result.stdout
    reverse = report_cli(str(old), "--baseline", str(bundle))
    assert reverse.exit_code == 0
    assert "- intel-cpu (profile quick): missing from new" in reverse.stdout

    def other_profile(report):
        report["profile"] = "fast"
        for t in report["targets"]:
            t["profile"] = "fast"
    nothing = report_cli(str(bundle), "--baseline", str(variant(bundle, tmp_path / "fast", other_profile)), "-f", "json")
    assert nothing.exit_code == 0
    comparison = json.loads(nothing.stdout)["comparison"]
    assert comparison["targets"] == [] and len(comparison["notes"]) == 2 * len(TARGETS)


# ------------------------------------------------------------------ statistics on hand-made numbers


def hand_report(**targets) -> dict:
    """targets: name -> (p50, p90, size_bytes, cosine_min)."""
    return {"profile": "p", "source": {"location": "m.onnx"}, "original": {"latency_ms": {"p50": 1.0}}, "targets": [
        {"target": name, "profile": "p", "latency_ms": {"p50": p50, "p90": p90}, "size_bytes": size,
         "accuracy": {"cosine_min": cos}} for name, (p50, p90, size, cos) in targets.items()]}


def changes(comparison: review.Comparison, target: str) -> dict[str, review.Change]:
    pair = next(p for p in comparison.pairs if p.target == target)
    return {c.metric: c for c in pair.changes}


def test_compare_thresholds():
    old = hand_report(a=(10.0, 20.0, 1000, 0.99), b=(10.0, 20.0, 1000, 0.99), c=(10.0, 20.0, 1000, 0.99))
    new = hand_report(a=(10.5, 20.0, 1050, 0.985),  # exactly at the limits: not a regression
                      b=(10.51, 21.1, 1051, 0.9849),  # just beyond every limit
                      c=(5.0, 10.0, 500, 1.0))  # better everywhere
    comparison = review.compare(new, old)
    a, b, c = (changes(comparison, n) for n in "abc")
    assert not any(ch.regression for ch in a.values())
    assert a["p50_ms"].relative == pytest.approx(0.05)
    assert a["cosine_min"].delta == pytest.approx(-0.005)
    assert all(ch.regression for ch in b.values())
    assert b["p90_ms"].relative == pytest.approx(0.055) and b["p90_ms"].old == 20.0 and b["p90_ms"].new == 21.1
    assert not any(ch.regression for ch in c.values())
    assert c["size_bytes"].relative == pytest.approx(-0.5)
    assert comparison.regressed and [p.target for p in comparison.pairs if p.regressed] == ["b"]
    assert comparison.notes == []


def test_compare_parameters_and_missing_figures():
    old = hand_report(a=(10.0, 20.0, 1000, 0.99))
    new = hand_report(a=(11.0, 20.0, 1000, 0.97))
    relaxed = review.compare(new, old, max_regression=0.2, max_cosine_drop=0.05)
    assert not relaxed.regressed
    strict = review.compare(new, old, max_regression=0.2, max_cosine_drop=0.01)
    assert [c.metric for c in strict.pairs[0].regressions] == ["cosine_min"]
    # a figure missing (None in the JSON: a non-finite value) or a zero baseline never counts as a regression
    gone = hand_report(a=(None, 20.0, 1000, None))
    zero = hand_report(a=(0.0, 20.0, 1000, 0.99))
    assert not review.compare(gone, old).regressed and not review.compare(old, gone).regressed
    assert changes(review.compare(new, zero), "a")["p50_ms"].relative is None


def test_compare_duplicate_targets_is_a_usage_error():
    report = hand_report(a=(1.0, 1.0, 1, 1.0))
    with pytest.raises(review.UsageError, match="appears twice in the new bundles"):
        review.compare([report, report], report)


def test_parse_fraction():
    assert review.parse_fraction("5%") == pytest.approx(0.05)
    assert review.parse_fraction(" 12.5 % ") == pytest.approx(0.125)
    assert review.parse_fraction("0.05") == pytest.approx(0.05)
    assert review.parse_fraction("0") == 0.0
    for bad in ("abc", "-5%", "5", "nan", "", "%", "inf"):
        with pytest.raises(review.UsageError, match="--max-regression"):
            review.parse_fraction(bad)


def test_axis_ticks_are_round_and_cover_the_range():
    assert review.nice_ticks(0, 1.0) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ticks = review.nice_ticks(0.89, 1.0)
    assert ticks[0] >= 0.89 and ticks[-1] <= 1.0 and len(ticks) >= 4
    assert review.log_ticks(0.04, 15) == pytest.approx([0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10])
    axis = review.Axis(0.0, 0.35, 0, 100)
    assert [axis.label(t) for t in axis.ticks()] == ["0.0", "0.1", "0.2", "0.3"]
    fine = review.Axis(0.89, 1.0, 0, 100)
    assert [fine.label(t) for t in fine.ticks()] == ["0.900", "0.925", "0.950", "0.975", "1.000"]


# ------------------------------------------------------------------ bad input: exit 2, one line


def test_missing_path(tmp_path):
    assert_usage_error(report_cli(str(tmp_path / "nope")), "no such bundle folder", "nope")


def test_folder_without_manifest(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "report.json").write_text("{}")
    assert_usage_error(report_cli(str(tmp_path / "plain")), "not an edgekit bundle", "no manifest.json")


def test_file_that_is_not_a_bundle(tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("hi")
    assert_usage_error(report_cli(str(stray)), "not an edgekit bundle")


def test_garbage_report_json(bundle, tmp_path):
    bad = variant(bundle, tmp_path / "bad")
    (bad / "report.json").write_bytes(b"\x00\xffnot json{{")
    assert_usage_error(report_cli(str(bad)), "report.json is not valid JSON")
    (bad / "report.json").write_text('{"edgekit_version": "0.1.0", "targets": "none"}')
    assert_usage_error(report_cli(str(bad)), "not an edgekit report", "targets")
    (bad / "report.json").write_text("[1, 2]")
    assert_usage_error(report_cli(str(bad)), "not an edgekit report")
    (bad / "report.json").unlink()
    assert_usage_error(report_cli(str(bad)), "no report.json")


def test_garbage_manifest(bundle, tmp_path):
    bad = variant(bundle, tmp_path / "bad")
    (bad / "manifest.json").write_text("{ not json")
    assert_usage_error(report_cli(str(bad)), "manifest.json is not valid JSON")


def test_incompatible_versions(bundle, tmp_path):
    def newer(report):
        report["edgekit_version"] = "0.2.0"
    assert_usage_error(report_cli(str(variant(bundle, tmp_path / "newer", newer))),
                       "bundle from an incompatible edgekit version 0.2.0")

    def patch(report):
        report["edgekit_version"] = "0.1.9"
    assert report_cli(str(variant(bundle, tmp_path / "patch", patch))).exit_code == 0

    future = variant(bundle, tmp_path / "format")
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["format"], manifest["edgekit"] = "edgekit-bundle/2", "3.0.0"
    (future / "manifest.json").write_text(json.dumps(manifest))
    assert_usage_error(report_cli(str(future)), "bundle from an incompatible edgekit version 3.0.0", "edgekit-bundle/2")
    # a bad baseline is bad input too
    assert_usage_error(report_cli(str(bundle), "--baseline", str(future)), "incompatible edgekit version")


@pytest.mark.parametrize("edit, key", [
    (lambda r: r.pop("original"), "original.latency_ms"),
    (lambda r: r["original"].update(latency_ms=None), "original.latency_ms"),  # null without latency_measured false
    (lambda r: r["targets"][0].pop("target"), "targets[0].target"),
    (lambda r: r["targets"][1].update(latency_ms=[1.0]), "targets[1].latency_ms"),
    (lambda r: r["targets"][0].update(accuracy=0.99), "targets[0].accuracy"),
    (lambda r: r["targets"][0].update(budgets="min_cosine"), "targets[0].budgets"),
    (lambda r: r["targets"][0].update(notes="abc"), "targets[0].notes"),
    (lambda r: r.update(notes=5), "'notes'"),
    (lambda r: r.update(source="model.onnx"), "'source'"),
    (lambda r: r.update(benchmark=[]), "'benchmark'"),
])
def test_malformed_report_is_one_usage_error_naming_the_key(bundle, tmp_path, edit, key):
    bad = variant(bundle, tmp_path / "bad", edit)
    for fmt in ("md", "json", "html"):
        assert_usage_error(report_cli(str(bad), "-f", fmt), "report.json: not an edgekit report", key)
    assert_usage_error(report_cli(str(bundle), "--baseline", str(bad)), key)


def test_hostile_figures_read_as_dashes(bundle, tmp_path):
    """A figure that is not a number, a boolean or not finite is a dash in every format; so is a limit."""
    def edit(report):
        for entry in [report["original"], *report["targets"]]:
            entry["latency_noisy"] = False
        report["original"]["latency_ms"]["p50"] = "fast"
        report["original"]["size_bytes"] = True
        cpu, intel = report["targets"]
        cpu["latency_ms"].update(p50=None, p90=float("nan"), p99=float("inf"))
        cpu["latency_samples_ms"] = [1.0, -2.0, "x", None, float("nan"), 10 ** 400]
        cpu.update(speedup_p50=float("-inf"), size_bytes="big")
        cpu["accuracy"].update(cosine_min="high", top1_agreement=float("nan"))
        cpu["budgets"] = [1, "x", {"budget": "min_cosine", "limit": "0.9"}, {"budget": "max_latency_ms", "limit": float("nan")}]
        intel.update(accuracy=None, budgets=None, notes=None, verdict=None, latency_samples_ms="none")
    odd = variant(bundle, tmp_path / "odd", edit)
    result = report_cli(str(odd))
    assert result.exit_code == 0, result.output
    rows = {r[1]: r for r in table_rows(result.stdout)}
    assert rows["original"][5:7] == ["—", "—"] and rows["original"][9] == "—"  # no p50: no speedup either
    assert rows["cpu"][5:11] == ["—"] * 6
    assert rows["intel-cpu"][10] == "—" and rows["intel-cpu"][-1] == "—"
    html_text = report_cli(str(odd), "-f", "html").stdout
    cpu_row = next(line for line in html_text.splitlines() if line.startswith("<tr><td>cnn.onnx</td><td>cpu</td>"))
    assert cpu_row.count('<td class="n">—</td>') == 6
    assert "min_cosine 0.9 (budget)" not in html_text  # a limit that is not a number draws no line
    assert report_cli(str(odd), "--baseline", str(bundle)).exit_code == 0  # a missing figure is never a regression


def test_records_read_each_figure_once():
    from edgekit.review.records import read_report

    record = read_report({"profile": "p", "original": {"latency_ms": None, "latency_measured": False, "latency_noisy": True},
                          "targets": [{"target": "a", "latency_ms": {"p50": 2, "p90": True, "p99": float("inf")},
                                       "latency_samples_ms": [3.0, -1, "x", 1.5], "latency_noisy": 1,
                                       "accuracy": {"cosine_min": 0.99, "per_output": {}}, "size_bytes": 10},
                                      {"target": "b", "latency_ms": {"p50": 1.0}, "latency_measured": False,
                                       "latency_samples_ms": [1.0], "latency_not_measured": "no NPU"}]}, "r.json")
    o, (a, b) = record.original, record.targets
    assert not o.measured and o.latency.p50 is None and not o.noisy  # not measured: no figures, not noisy
    assert a.measured and (a.latency.p50, a.latency.p90, a.latency.p99) == (2.0, None, None)
    assert a.samples == [3.0, 1.5] and a.noisy and a.size_bytes == 10.0
    assert a.accuracy.cosine_min == 0.99 and a.accuracy.written == {"cosine_min": 0.99}
    assert not b.measured and b.latency.p50 is None and b.samples == [] and b.not_measured == "no NPU"
    assert record.model == "" and record.benchmark.batch == "1"


def test_bad_max_regression(bundle):
    for bad in ("abc", "-5%", "7"):
        assert_usage_error(report_cli(str(bundle), "--baseline", str(bundle), "--max-regression", bad), "--max-regression")


def test_no_bundle_and_bad_format(bundle):
    assert report_cli().exit_code == 2
    assert report_cli(str(bundle), "--format", "pdf").exit_code == 2


def test_output_is_a_folder(bundle, tmp_path):
    assert_usage_error(report_cli(str(bundle), "-o", str(tmp_path)), "is a folder")


# ------------------------------------------------------------------ the page in a real browser

CHROMIUM = Path("/usr/bin/chromium")


def test_html_renders_in_headless_chromium(bundle, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    new = variant(bundle, tmp_path / "new", slower(1.5, targets=("cpu",)))
    page = tmp_path / "review.html"
    assert report_cli(str(new), "--baseline", str(bundle), "-o", str(page)).exit_code == 1
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1200,1600", page.resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    assert shot.stat().st_size > 10_000  # a blank page compresses to a few hundred bytes
    assert re.match(rb"\x89PNG", shot.read_bytes()[:4])


# ------------------------------------------------------------------ Report.from_dict


def test_report_from_dict_is_the_inverse_of_to_dict(bundle):
    """report.json -> Report -> report.json gives the same JSON, and the same report.md."""
    from edgekit.bundle import clean_json
    from edgekit.report import Report

    data = json.loads((bundle / "report.json").read_text())
    report = Report.from_dict(data)
    assert clean_json(report.to_dict()) == data
    assert report.to_markdown() == (bundle / "report.md").read_text()


def test_report_from_dict_reads_old_reports(bundle):
    """A report without the newer fields (samples, throughput, cache, verified_on...) still loads."""
    from edgekit.report import Report

    data = json.loads((bundle / "report.json").read_text())
    for entry in [data["original"], *data["targets"]]:
        for key in ("latency_samples_ms", "latency_cv", "throughput", "first_inference_ms"):
            entry.pop(key, None)
    for t in data["targets"]:
        for key in ("verified_on", "memory_mb", "build_seconds", "runtime_settings", "quantization"):
            t.pop(key, None)
    data.pop("cache")
    report = Report.from_dict(data)
    assert [t.target for t in report.targets] == list(TARGETS)
    assert report.original_latency is not None and report.original_latency.samples_ms == []
    assert report.to_markdown().startswith("# edgekit report:")
