"""`edgekit.compile(nn.Module, example_inputs=...)`: exported, verified and benchmarked against the module itself
(issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit.errors import UsageError
from edgekit.verify_bundle import verify


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


class Block(nn.Module):
    """A small transformer encoder block: attention, feed-forward, layer norms."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)

    def forward(self, x):
        return self.layer(x)


@pytest.mark.parametrize("make, example, names", [
    (_cnn, (torch.randn(1, 3, 16, 16),), ["image"]),
    (Block, (torch.randn(1, 8, 32),), ["tokens"]),
], ids=["cnn", "transformer-block"])
def test_a_module_compiles_and_is_verified_against_itself(tmp_path, quick_profile, make, example, names):
    module = make().eval()
    report = edgekit.compile(module, example_inputs=example, input_names=names, output_names=["out"],
                             targets=["cpu", "intel-cpu"], profile=str(quick_profile), output=tmp_path / "out",
                             no_bench=True)
    assert not report.failed and [t.target for t in report.targets] == ["cpu", "intel-cpu"]
    source = report.source
    assert source["kind"] == "pytorch" and source["location"].startswith("python:")
    assert source["weights_format"] == "pytorch-module" and len(source["weights_sha256"]["state_dict"]) == 64
    assert report.original["settings"]["runtime"] == "pytorch"  # the module itself is the original
    assert any("exported from the Python module with torch.export (dynamo)" in n for n in report.notes)
    for t in report.targets:
        assert t.accuracy.cosine_min > 0.9, (t.target, t.accuracy.cosine_min)
    assert verify(tmp_path / "out").ok
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source"]["weights_sha256"] == source["weights_sha256"]


def test_the_state_dict_hash_follows_the_weights():
    from edgekit.source import module_source

    one, two = _cnn(), _cnn()
    assert module_source(one).weight_files == module_source(two).weight_files
    with torch.no_grad():
        two[0].weight[0, 0, 0, 0] += 1.0
    assert module_source(one).weight_files != module_source(two).weight_files
    assert module_source(one).name == "sequential"


def test_a_module_without_example_inputs_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="needs example inputs"):
        edgekit.compile(_cnn(), output=tmp_path / "out")


def test_the_original_is_the_module_run_on_the_samples(tmp_path, quick_profile):
    module = _cnn()
    report = edgekit.compile(module, example_inputs=(torch.randn(1, 3, 16, 16),), input_names=["image"],
                             targets=["cpu"], profile=str(quick_profile), output=tmp_path / "out", no_bench=True)
    with np.load(tmp_path / "out" / "cpu" / "reference.npz") as stored:
        feed = stored["input:image"] if "input:image" in stored.files else None
    if feed is not None:  # the artifact's stored reference is close to what the module itself computes
        with torch.inference_mode():
            expected = module(torch.from_numpy(feed)).numpy()
        with np.load(tmp_path / "out" / "cpu" / "reference.npz") as stored:
            got = stored[next(k for k in stored.files if k.startswith("output:"))]
        assert np.corrcoef(expected.ravel(), got.ravel())[0, 1] > 0.9
    assert report.targets[0].accuracy.samples > 0


class Branchy(nn.Module):
    """Control flow on the data: torch.export refuses it, so it is traced."""

    def __init__(self, always: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.always = nn.Linear(4, 4), nn.Linear(4, 4), always

    def forward(self, x):
        condition = (x * 0).sum() == 0 if self.always else x.sum() > 0
        return self.a(x) if condition else self.b(x)


def test_a_module_torch_export_cannot_trace_is_traced_and_the_report_says_why(tmp_path, quick_profile):
    report = edgekit.compile(Branchy(always=True).eval(), example_inputs=(torch.ones(1, 4),), targets=["cpu"],
                             profile=str(quick_profile), output=tmp_path / "out", no_bench=True)
    (note,) = [n for n in report.notes if "exported from the Python module" in n]
    assert "by TorchScript tracing (torch.export failed: " in note and "\x1b[" not in note


def test_a_traced_graph_that_froze_a_branch_is_caught_by_the_export_check(tmp_path, quick_profile):
    """Tracing keeps the branch the example input took; samples that take the other one show it."""
    from edgekit.errors import ExportMismatchError

    with pytest.raises(ExportMismatchError, match="export check failed"):
        edgekit.compile(Branchy(always=False).eval(), example_inputs=(torch.ones(1, 4),), targets=["cpu"],
                        profile=str(quick_profile), output=tmp_path / "out", no_bench=True)
    assert not (tmp_path / "out").exists()


def test_the_modules_export_is_checked_against_the_module(tmp_path, quick_profile):
    report = edgekit.compile(_cnn(), example_inputs=(torch.randn(1, 3, 16, 16),), targets=["cpu"],
                             profile=str(quick_profile), output=tmp_path / "out", no_bench=True)
    error = report.original["export_check_max_abs_error"]
    assert error is not None and 0.0 <= error < 1e-4
