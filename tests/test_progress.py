"""Progress events: JSON lines, plain lines, live bars on a terminal, and silence with -q."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.progress import ConsoleProgress, JsonProgress, NullProgress, eta, make_progress, rounds
from edgekit.report import PROVISIONAL
from edgekit.stages import recovery

CNN = ["--shape", "input=1,3,32,32", "-t", "cpu", "-t", "intel-cpu"]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def compile_cli(*args: str):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


def events(stderr: str) -> list[dict]:
    """Every event line of stderr (each must be valid JSON); the command's own lines are not events."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def exercise(progress) -> None:
    """A stage, a step, a counted task with figures, a note, and benchmark rounds fed as fractions."""
    progress.stage("cpu: build int8 artifact for onnxruntime on CPU")
    progress.step("quantise QDQ", "cpu")
    with progress.task("calibration", 3, "cpu") as advance:
        for k in (1, 2, 3):
            advance(k)
    with progress.task("recovery attempt", 4, "cpu", "cosine_min", bound_s=60) as advance:
        advance(1, figure=0.95)
        progress.note("1 layer(s) FP32: cosine_min 0.9500 misses the budget (0.1 s)")
        advance(2, figure=0.99)
    with rounds(progress, "benchmark round") as on_fraction:
        for fraction in (0.25, 0.5, 1.0):
            on_fraction(fraction)


# ------------------------------------------------------------------ the event model


def test_json_progress_writes_one_valid_object_per_event():
    stream = io.StringIO()
    exercise(JsonProgress(stream, interval=0))
    lines = stream.getvalue().splitlines()
    got = [json.loads(line) for line in lines]
    assert [e["event"] for e in got] == ["stage", "step", "progress", "progress", "progress", "done",
                                         "progress", "note", "progress", "done", "progress", "progress", "progress", "done"]
    assert all(isinstance(e["t_s"], float) for e in got)
    calibration = [e for e in got if e.get("task") == "calibration"]
    assert [(e["k"], e["n"]) for e in calibration] == [(1, 3), (2, 3), (3, 3), (3, 3)]
    assert all(e["target"] == "cpu" and e["step"] == "quantise QDQ" for e in calibration)
    assert all(e["eta_s"] >= 0 and e["elapsed_s"] >= 0 for e in calibration if e["event"] == "progress")
    attempts = [e for e in got if e.get("task") == "recovery attempt" and e["event"] == "progress"]
    assert [(e["k"], e["n"], e["figure"], e["figure_name"]) for e in attempts] == [(1, 4, 0.95, "cosine_min"),
                                                                                (2, 4, 0.99, "cosine_min")]
    note = next(e for e in got if e["event"] == "note")
    assert note["text"].startswith("1 layer(s) FP32") and note["stage"].startswith("cpu: build")
    bench = [e for e in got if e.get("task") == "benchmark round" and e["event"] == "progress"]
    assert [(e["k"], e["n"]) for e in bench] == [(1, 4), (2, 4), (3, 3)]  # round k of about k / fraction


def test_json_figure_that_is_not_a_number_stays_valid_json():
    stream = io.StringIO()
    with JsonProgress(stream, interval=0).task("recovery attempt", 2, "cpu", "cosine_min") as advance:
        advance(1, figure=float("nan"))
    first = stream.getvalue().splitlines()[0]
    json.loads(first)  # NaN is not JSON
    assert '"figure": "nan"' in first


def test_json_progress_events_are_thinned_but_keep_first_last_and_figures():
    stream = io.StringIO()
    with JsonProgress(stream, interval=3600).task("calibration", 100, "cpu") as advance:
        for k in range(1, 101):
            advance(k, figure=0.5 if k == 50 else None)
    ks = [e["k"] for e in events(stream.getvalue()) if e["event"] == "progress"]
    assert ks == [1, 50, 100]


def test_plain_mode_one_line_per_event_with_k_of_n():
    stream = io.StringIO()
    exercise(ConsoleProgress(stream, tty=False, interval=0))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 14  # one line per event, no bar drawing
    assert lines[0].startswith("[") and lines[0].endswith("s] cpu: build int8 artifact for onnxruntime on CPU")
    assert lines[1].strip() == "cpu: step: quantise QDQ"
    assert [re.search(r"calibration (\d+) of (\d+)", line).groups() for line in lines[2:5]] == [("1", "3"), ("2", "3"),
                                                                                                ("3", "3")]
    assert all("s left" in line for line in lines[2:5])
    assert "calibration done: 3 of 3" in lines[5]
    assert "recovery attempt 1 of 4" in lines[6] and "cosine_min 0.9500" in lines[6]
    assert lines[7].strip().startswith("note: 1 layer(s) FP32")
    assert "benchmark round 1 of 4" in lines[10] and "benchmark round 3 of 3" in lines[12]
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()


def test_bar_on_a_terminal():
    stream = FakeTty()
    progress = ConsoleProgress(stream)
    assert progress.tty
    exercise(progress)
    text = stream.getvalue()
    assert "\x1b[" in text and "\r" in text  # drawn in place, with terminal control codes
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "cpu: calibration" in shown and "3/3" in shown
    assert "cpu: recovery attempt" in shown and "cosine_min 0.9900" in shown and "2/4" in shown
    assert "note: 1 layer(s) FP32" in shown and "cpu: build int8 artifact" in shown
    assert "calibration 1 of 3" not in shown  # no plain lines on a terminal


def test_nested_task_leaves_its_parents_bar():
    stream = FakeTty()
    progress = ConsoleProgress(stream)
    with progress.task("recovery attempt", 2, "cpu") as outer:
        with progress.task("calibration", 2, "cpu") as inner:
            inner(2)
        outer(1)
    assert progress._bars.rich is None and not progress._bars.ids


def test_make_progress_modes():
    assert type(make_progress("auto", quiet=True)) is NullProgress
    assert type(make_progress("none")) is NullProgress
    assert isinstance(make_progress("json", quiet=True), JsonProgress)  # a JSON stream asked for is kept
    assert make_progress("plain", stream=FakeTty()).tty is False
    assert make_progress("auto", stream=FakeTty()).tty is True
    assert make_progress("auto", stream=io.StringIO()).tty is False


def test_eta():
    assert eta(10.0, 2, 4) == pytest.approx(10.0)
    assert eta(10.0, 0, 4) is None and eta(10.0, 3, None) is None
    assert eta(10.0, 2, 10, bound_s=15.0) == pytest.approx(5.0)  # never beyond the task's own bound
    assert eta(12.0, 3, 5, since_first=2.0) == pytest.approx(2.0)  # per item measured from the first one


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 7, 8, 13, 16, 33])
def test_most_attempts_bounds_the_search(limit):
    for need in range(1, limit + 2):  # the fewest layers that pass; limit + 1: never passes
        made = []

        def evaluate(path, need=need):
            k = int(path.name)
            made.append(k)
            return (1.0 if k >= need else 0.0), k >= need

        recovery.search([f"l{i}" for i in range(limit)], lambda keep: Path(str(len(keep))), evaluate, 0.0, limit, 60)
        assert len(made) <= recovery.most_attempts(limit), (need, made)


# ------------------------------------------------------------------ through the CLI, on a real tiny compile


def test_compile_json_progress(cnn_onnx, quick_profile, tmp_path):
    result = compile_cli(str(cnn_onnx), *CNN, "-p", str(quick_profile), "-o", str(tmp_path / "out"), "--progress", "json")
    assert result.exit_code == 0, result.output
    got = events(result.stderr)
    others = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert others == [f"bundle: {tmp_path / 'out'}", f"verdict pass is provisional: {PROVISIONAL}"]
    kinds = {e["event"] for e in got}
    assert kinds == {"stage", "step", "note", "progress", "done"}
    assert all(isinstance(e["t_s"], (int, float)) for e in got)
    steps = [(e["target"], e["step"]) for e in got if e["event"] == "step"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    listed = {t["target"]: t["quantization"]["steps"].split(" → ") for t in report["targets"]}
    assert steps == [(t, s) for t in ("cpu", "intel-cpu") for s in listed[t]]  # every step the report lists, in order
    for target in ("cpu", "intel-cpu"):
        calibration = [e for e in got if e.get("task") == "calibration" and e["target"] == target]
        assert calibration[-1]["event"] == "done" and calibration[-1]["k"] == calibration[-1]["n"] == 16
        assert calibration[0]["k"] == 1 and "eta_s" in calibration[0] and "elapsed_s" in calibration[0]
        assert calibration[0]["stage"] == f"{target}: build int8 artifact for {'onnxruntime' if target == 'cpu' else 'openvino'} on CPU"
    rounds_ = [e for e in got if e.get("task") == "benchmark round"]
    assert rounds_ and rounds_[-1]["event"] == "done" and rounds_[-1]["k"] >= 1
    assert [e["stage"] for e in got if e["event"] == "stage"][-1].startswith("benchmark the original and 2 artifact(s)")


def test_compile_plain_progress_and_quiet(cnn_onnx, quick_profile, tmp_path):
    plain = compile_cli(str(cnn_onnx), *CNN[:4], "-p", str(quick_profile), "-o", str(tmp_path / "a"), "--progress", "plain")
    assert plain.exit_code == 0, plain.output
    lines = plain.stderr.splitlines()
    assert any(re.fullmatch(r"\[ *\d+\.\ds\] cpu: build int8 artifact for onnxruntime on CPU", line) for line in lines)
    assert any(line.strip() == "cpu: step: quantise QDQ" for line in lines)
    assert any(re.fullmatch(r" +cpu: calibration 16 of 16: \d+\.\d s, about \d+ s left", line) for line in lines)
    assert any(line.strip().startswith("cpu: calibration done: 16 of 16 in") for line in lines)
    assert "\x1b" not in plain.stderr and "{" not in plain.stderr
    quiet = compile_cli(str(cnn_onnx), *CNN[:4], "-p", str(quick_profile), "-o", str(tmp_path / "b"), "-q")
    assert quiet.exit_code == 0, quiet.output
    # -q: nothing but the command's own lines (synthetic inputs: the verdict is provisional)
    assert quiet.stderr.splitlines() == [f"bundle: {tmp_path / 'b'}", f"verdict pass is provisional: {PROVISIONAL}"]
    json_quiet = compile_cli(str(cnn_onnx), *CNN[:4], "-p", str(quick_profile), "-o", str(tmp_path / "c"), "-q",
                             "--progress", "json")
    assert events(json_quiet.stderr) and not [line for line in json_quiet.stderr.splitlines() if line.startswith("[")]


def test_bench_json_progress(cnn_bundle):
    result = CliRunner().invoke(main, ["bench", str(cnn_bundle), "--duration", "0.2", "--progress", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    got = events(result.stderr)
    assert [e for e in got if e["event"] == "stage"][0]["stage"] == "load cpu"
    rounds_ = [e for e in got if e.get("task") == "latency round"]
    assert rounds_[-1]["event"] == "done" and all(e["k"] <= e["n"] for e in rounds_ if "n" in e)
