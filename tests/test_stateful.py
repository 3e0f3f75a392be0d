"""A model whose state is fed back is calibrated and evaluated on the states it reaches (issue 19)."""

from __future__ import annotations

import numpy as np
import onnx

import edgekit
from edgekit import graph
from edgekit.data import Samples
from edgekit.runtimes import OrtSession
from edgekit.stages.prepare import STATE_STEPS, _with_state
from edgekit.verify_bundle import verify

from models import stateful_vad_onnx


def test_state_pairs_are_found_by_name_shape_and_type(tmp_path):
    model = onnx.load(str(stateful_vad_onnx(tmp_path / "vad.onnx")))
    assert graph.state_pairs(model) == [("state", "stateN")]


def test_states_are_rolled_through_the_original(tmp_path):
    path = stateful_vad_onnx(tmp_path / "vad.onnx")
    session = OrtSession(path, 1)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 16)).astype(np.float32), "state": rng.standard_normal((1, 8)).astype(np.float32)}
             for _ in range(2 * STATE_STEPS)]
    samples = Samples(calibration=[dict(f) for f in feeds], evaluation=[dict(f) for f in feeds], benchmark=feeds[0],
                      origin="synthetic", synthetic=True, notes=[])
    _with_state(session, samples, [("state", "stateN")])
    for feeds_ in (samples.calibration, samples.evaluation):
        assert not feeds_[0]["state"].any() and not feeds_[STATE_STEPS]["state"].any()  # each sequence starts at zero
        for t in range(1, STATE_STEPS):
            expected = session.run({k: v for k, v in feeds_[t - 1].items()})[1]
            assert np.array_equal(feeds_[t]["state"], expected)
    assert "state fed back (stateN -> state)" in samples.notes[-1]


def test_a_stateful_model_with_an_if_subgraph_builds_for_both_targets(tmp_path, quick_profile):
    path = stateful_vad_onnx(tmp_path / "vad.onnx")
    report = edgekit.compile(str(path), targets=["cpu", "intel-cpu"], profile=str(quick_profile), output=tmp_path / "out",
                             no_bench=True)
    assert not report.failed and [t.target for t in report.targets] == ["cpu", "intel-cpu"]
    assert any("state fed back (stateN -> state)" in n for n in report.notes)
    per_output = report.targets[0].accuracy.per_output
    assert per_output["output"]["kind"] == "probability"  # one speech probability a call: decision agreement
    assert verify(tmp_path / "out").ok
