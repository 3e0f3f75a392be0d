"""Runtimes are registered units: a runtime defined here, in the test, compiles, verifies, benchmarks, reports
and embeds through the same code as the built-in ones, with nothing else changed but a target TOML file."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import edgekit
from edgekit import runtimes
from edgekit.cli import main
from edgekit.config import load_target
from edgekit.errors import UsageError
from edgekit.runtimes import Runtime, RuntimeDevices, register
from edgekit.stages.base import ArtifactNotWritten, BuildInputs, StepInput, StepResult, run_recipe, step


class ReferenceSession:
    """ONNX's own reference evaluator (pure Python): a real, independent runtime."""

    runtime = "toyrt"

    def __init__(self, path: Path, scale: float):
        from onnx.reference import ReferenceEvaluator

        self._evaluator = ReferenceEvaluator(str(path))
        model = onnx.load(str(path))
        self.output_names = [o.name for o in model.graph.output]
        self._inputs = {i.name for i in model.graph.input}
        self._scale = scale
        self.settings = {"runtime": "toyrt", "version": onnx.__version__, "device": "CPU", "evaluator": "onnx.reference",
                         "output_scale": scale}

    def run(self, feed):
        outputs = self._evaluator.run(None, {k: v for k, v in feed.items() if k in self._inputs})
        return [np.asarray(o) * self._scale for o in outputs]


@step("round weights to fp16")
def round_weights(inp: StepInput) -> StepResult:
    model = onnx.load(str(inp.path))
    rounded = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            value = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
            rounded += 1
    onnx.save(model, str(inp.artifact))
    return StepResult(inp.artifact, {"format": "FP32 ONNX, weights rounded to fp16", "rounded": str(rounded)},
                      [f"{rounded} weight tensors rounded to fp16"])


class ToyRuntime(Runtime):
    name = "toyrt"
    label = "Toy"
    suffix = ".onnx"
    reads = (".onnx",)
    extra_target_keys = {"output_scale": ((float, int), (0.0, None))}

    def probe(self) -> RuntimeDevices:
        return RuntimeDevices("toyrt", onnx.__version__, ("CPU",))

    def open(self, artifact, settings, threads):
        return ReferenceSession(artifact, float(settings.get("output_scale", 1.0)))

    def open_settings(self, target, profile, present):
        return {"device": "CPU", "output_scale": float(target.options.get("output_scale", 1.0))}

    def recipe(self, inputs: BuildInputs):
        return [round_weights]


@pytest.fixture
def toy_runtime():
    register(ToyRuntime)
    yield runtimes.get("toyrt")
    runtimes.unregister("toyrt")


def _target(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "toy.toml"
    path.write_text('description = "the onnx reference evaluator"\nruntime = "toyrt"\ndevice = "CPU"\n' + extra)
    return path


def test_a_runtime_registered_in_a_test_compiles_verifies_benchmarks_reports_and_embeds(toy_runtime, cnn_onnx, quick_profile,
                                                                                       tmp_path):
    target = _target(tmp_path, "output_scale = 1.0\n")
    out = tmp_path / "bundle"
    report = edgekit.compile(str(cnn_onnx), targets=[str(target), "cpu"], shapes=["input=1,3,32,32"],
                             profile=str(quick_profile), output=out)
    toy = next(t for t in report.targets if t.target == "toy")
    assert (toy.runtime, toy.verified_on, toy.verdict) == ("toyrt", "toyrt CPU", "pass")
    assert toy.quantization["steps"] == "round weights to fp16" and int(toy.quantization["rounded"]) > 0
    assert toy.accuracy.cosine_min > 0.999 and toy.latency is not None and toy.latency.p50 > 0
    assert "no accuracy recovery" not in " ".join(toy.notes)
    assert "- toy: built by the steps: round weights to fp16" in (out / "report.md").read_text()
    recorded = json.loads((out / "toy" / "runtime.json").read_text())
    assert recorded["runtime"] == "toyrt" and recorded["evaluator"] == "onnx.reference"

    runner = CliRunner()
    verified = runner.invoke(main, ["verify", str(out)])
    assert verified.exit_code == 0, verified.output
    assert "toy: toyrt CPU" in verified.output
    benched = runner.invoke(main, ["bench", str(out), "--duration", "0.3"])
    assert benched.exit_code == 0, benched.output
    assert "| toy | toyrt |" in benched.output
    reviewed = runner.invoke(main, ["report", str(out)])
    assert reviewed.exit_code == 0 and "toyrt" in reviewed.output
    embedded = runner.invoke(main, ["embed", str(out / "toy"), "--format", "c", "-o", str(tmp_path / "firmware")])
    assert embedded.exit_code == 0, embedded.output
    assert '_RUNTIME "toyrt"' in (tmp_path / "firmware" / "edgekit_toy.h").read_text()


def test_the_runtimes_own_target_key_reaches_its_session(toy_runtime, cnn_onnx, quick_profile, tmp_path):
    """`output_scale` is the toy runtime's key (Target.options): the session compile verified with applied it."""
    target = _target(tmp_path, "output_scale = 0.5\n")
    out = tmp_path / "b"
    edgekit.compile(str(cnn_onnx), targets=[str(target)], shapes=["input=1,3,32,32"], profile=str(quick_profile),
                    output=out, no_bench=True)
    assert json.loads((out / "toy" / "runtime.json").read_text())["output_scale"] == 0.5
    with np.load(out / "toy" / "reference.npz") as stored:
        feed = {k.split(":", 1)[1]: stored[k] for k in stored.files if k.startswith("input:")}
        (got,) = [stored[k] for k in stored.files if k.startswith("output:")]
    (plain,) = ReferenceSession(out / "toy" / "model.onnx", 1.0).run(feed)
    np.testing.assert_allclose(got, 0.5 * plain, rtol=1e-6, atol=1e-7)


def test_runtime_keys_are_checked_by_the_runtime(toy_runtime, tmp_path):
    assert load_target(str(_target(tmp_path, "output_scale = 2\n"))).options == {"output_scale": 2}
    with pytest.raises(UsageError, match=r"'output_scale' = -1 is out of range"):
        load_target(str(_target(tmp_path, "output_scale = -1\n")))
    with pytest.raises(UsageError, match=r"'contrib_ops' is for ONNX Runtime targets only"):
        load_target(str(_target(tmp_path, "contrib_ops = true\n")))
    with pytest.raises(UsageError, match=r"unknown key 'output_scal' \(did you mean 'output_scale'\?\)"):
        load_target(str(_target(tmp_path, "output_scal = 2\n")))


def test_unknown_runtime_names_the_registered_ones(tmp_path):
    with pytest.raises(UsageError, match=r"unknown runtime 'toyrt' \(registered: onnxruntime, openvino, pytorch\)"):
        runtimes.get("toyrt")
    with pytest.raises(UsageError, match=r"toy.toml: unknown runtime 'toyrt'"):
        load_target(str(_target(tmp_path)))
    original_only = tmp_path / "original.toml"
    original_only.write_text('runtime = "pytorch"\ndevice = "CPU"\n')
    with pytest.raises(UsageError, match=r"runtime 'pytorch' runs the original model only; .* \(onnxruntime, openvino\)"):
        load_target(str(original_only))


def test_a_recipe_that_does_not_write_the_artifact_is_a_bug(tmp_path, cnn_onnx):
    @step("forgets the artifact")
    def forgets(inp: StepInput) -> StepResult:
        return StepResult(inp.path)

    inputs = BuildInputs(load_target("cpu"), None, "fp32", cnn_onnx, cnn_onnx, [], False, None, None, tmp_path,
                         tmp_path / "model.onnx")
    with pytest.raises(ArtifactNotWritten, match="forgets the artifact"):
        run_recipe([forgets], inputs)
