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


def test_an_artifact_runs_each_sequence_on_its_own_state(tmp_path):
    from edgekit.stages.verify import run_free, run_ordered

    path = stateful_vad_onnx(tmp_path / "vad.onnx")
    session = OrtSession(path, 1)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 16)).astype(np.float32), "state": np.zeros((1, 8), np.float32)}
             for _ in range(2 * STATE_STEPS)]
    samples = Samples(calibration=[], evaluation=feeds, benchmark=feeds[0], origin="synthetic", synthetic=True, notes=[])
    _with_state(session, samples, [("state", "stateN")])
    names = session.output_names
    # the original on its own state is the original on the states the samples hold: the same outputs
    free = run_free(session, samples.evaluation, names, [("state", "stateN")], STATE_STEPS)
    assert all(np.array_equal(a, b) for fa, fb in zip(free, run_ordered(session, samples.evaluation, names)) for a, b in zip(fa, fb))

    class Drifting:  # an artifact whose state is off by a little each call
        output_names, runtime, settings = names, "test", {}

        def run(self, feed):
            output, state = session.run(feed)
            return [output, state + 0.05]

    drifting = Drifting()
    fed = run_ordered(drifting, samples.evaluation, names)
    own = run_free(drifting, samples.evaluation, names, [("state", "stateN")], STATE_STEPS)
    assert np.array_equal(own[0][0], fed[0][0])  # the first call of a sequence starts from its zero state either way
    step_error = lambda outs, t: float(np.abs(outs[t][1] - free[t][1]).max())  # noqa: E731
    assert step_error(own, STATE_STEPS - 1) > step_error(fed, STATE_STEPS - 1)  # its own error accumulates
    assert np.array_equal(own[STATE_STEPS][0], fed[STATE_STEPS][0])  # and the next sequence starts afresh


def test_a_stateful_model_with_an_if_subgraph_builds_for_both_targets(tmp_path, quick_profile):
    path = stateful_vad_onnx(tmp_path / "vad.onnx")
    report = edgekit.compile(str(path), targets=["cpu", "intel-cpu"], profile=str(quick_profile), output=tmp_path / "out",
                             no_bench=True)
    assert not report.failed and [t.target for t in report.targets] == ["cpu", "intel-cpu"]
    assert any("state fed back (stateN -> state)" in n for n in report.notes)
    for target in report.targets:  # judged on its own state, the figure on the original's states beside it
        assert any("as a device runs it" in n and "(judged)" in n for n in target.notes), target.notes
    per_output = report.targets[0].accuracy.per_output
    assert per_output["output"]["kind"] == "probability"  # one speech probability a call: decision agreement
    assert verify(tmp_path / "out").ok
