"""Bounded fuzzing: mutated ONNX bytes and profile TOML text never crash the CLI (exit 0, 1 or 2, no traceback)."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from hostile_inputs import matmul_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.cli import main

VALID_ONNX = matmul_model().SerializeToString()
PROFILE = (
    'description = "fuzz"\nprecision = "int8"\n'
    "[budgets]\nmin_cosine = 0.5\n"
    "[data]\ncalibration_samples = 4\neval_samples = 4\nseed = 0\n"
    "[benchmark]\nsequence_length = 8\nmin_runs = 5\nmin_seconds = 0.05\nmax_seconds = 1.0\n"
)
FUZZ = settings(max_examples=30, deadline=timedelta(seconds=60), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def compile_in(folder: Path, model: Path, profile: Path):
    result = CliRunner().invoke(main, ["compile", str(model), "--profile", str(profile), "-o", str(folder / "out"), "-q"])
    # the runner catches exceptions and calls them exit 1: only a SystemExit the CLI chose counts
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 1:  # a missed budget, and only that: the bundle is written and says so
        import json

        assert json.loads((folder / "out" / "report.json").read_text())["verdict"] == "fail"
    return result


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       cut=st.none() | st.integers(0, len(VALID_ONNX)))
def test_mutated_onnx_never_crashes(edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "p.toml").write_text(PROFILE)
        (folder / "m.onnx").write_bytes(mutate(VALID_ONNX, edits, cut))
        compile_in(folder, folder / "m.onnx", folder / "p.toml")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(list(b'=[]"\n#.0-xz\\\x00'))), max_size=4),
       cut=st.none() | st.integers(0, len(PROFILE)))
def test_mutated_profile_toml_never_crashes(edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "m.onnx").write_bytes(VALID_ONNX)
        (folder / "p.toml").write_bytes(mutate(PROFILE.encode(), edits, cut))
        compile_in(folder, folder / "m.onnx", folder / "p.toml")
