"""Length buckets (OpenVINO text artifacts): padded to a static shape per bucket, outputs cut back, and the
same numbers as the dynamic IR on real tokens."""

from __future__ import annotations

import json
import shutil

import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner
from cli_helpers import embed_c, rehash

import edgekit
from edgekit import runtimes
import edgekit.runtimes.openvino  # noqa: F401  (runtimes.openvino below)
from edgekit.cli import main
from edgekit.errors import UsageError
from edgekit.runtimes import BucketPlan, OpenVinoSession, plan_buckets, recorded_buckets

OPS = ov.opset13


def test_plan_pads_and_cuts():
    plan = BucketPlan((16, 32), ("input_ids", "attention_mask"), ((1,), (), (1, 2)))
    assert [plan.bucket_for(n) for n in (1, 16, 17, 32, 33)] == [16, 16, 32, 32, None]
    feed = {"input_ids": np.arange(1, 6, dtype=np.int64)[None], "attention_mask": np.ones((1, 5), np.int64),
            "other": np.ones(3)}
    padded = plan.pad(feed, 16)
    assert padded["input_ids"].shape == (1, 16) and padded["input_ids"].dtype == np.int64
    assert padded["input_ids"][0, :5].tolist() == [1, 2, 3, 4, 5] and not padded["input_ids"][0, 5:].any()
    assert padded["attention_mask"].sum() == 5 and padded["other"] is feed["other"]
    outs = plan.cut([np.ones((1, 16, 4)), np.ones((1, 4)), np.ones((1, 16, 16))], 5)
    assert [o.shape for o in outs] == [(1, 5, 4), (1, 4), (1, 5, 5)]
    assert plan.to_dict()["length_buckets"] == [16, 32]


def _text_model(second_input: str = "attention_mask", doubled: bool = False) -> ov.Model:
    ids = OPS.parameter([-1, -1], ov.Type.i64, name="input_ids")
    other = OPS.parameter([-1, -1], ov.Type.i64, name=second_input)
    mixed = OPS.convert(OPS.add(ids, other), "f32")
    tokens = OPS.concat([mixed, mixed], 1) if doubled else mixed
    pooled = OPS.reduce_sum(mixed, OPS.constant(np.array([1], np.int64)), keep_dims=False)
    tokens.output(0).get_tensor().set_names({"tokens"})
    pooled.output(0).get_tensor().set_names({"pooled"})
    return ov.Model([tokens, pooled], [ids, other])


def test_plan_finds_the_sequence_axes():
    plan, why = plan_buckets(_text_model(), (64, 16))
    assert why == "" and plan.buckets == (16, 64)
    assert plan.sequence_inputs == ("input_ids", "attention_mask") and plan.output_axes == ((1,), ())


@pytest.mark.parametrize("model, words", [
    (lambda: _text_model("token_type_ids"), "no attention_mask input"),
    (lambda: _text_model(doubled=True), "does not follow the sequence length"),
    (lambda: ov.Model([OPS.relu(p := OPS.parameter([1, 3, -1, -1], ov.Type.f32, name="pixels"))], [p]),
     "input pixels is not an integer [batch, sequence] tensor"),
    (lambda: ov.Model([OPS.convert(p := OPS.parameter([1, 128], ov.Type.i64, name="attention_mask"), "f32")], [p]),
     "of free length"),
])
def test_plan_refuses_what_padding_would_change(model, words):
    plan, why = plan_buckets(model(), (16,))
    assert plan is None and words in why


def test_session_records_why_buckets_were_skipped(tmp_path):
    path = tmp_path / "doubled.xml"
    ov.save_model(_text_model(doubled=True), str(path))
    session = OpenVinoSession(path, 1, length_buckets=(8,))
    assert "length_buckets" not in session.settings and "does not follow" in session.settings["length_buckets_skipped"]
    ids = np.ones((1, 5), np.int64)
    assert session.run({"input_ids": ids, "attention_mask": ids})[0].shape == (1, 10)


def test_recorded_buckets():
    assert recorded_buckets({}) == () and recorded_buckets({"length_buckets": [16, 64]}) == (16, 64)
    for bad in ("64", [0], [True], [1.5], {"a": 1}):
        with pytest.raises(UsageError, match="length_buckets"):
            recorded_buckets({"length_buckets": bad})


# ---------------------------------------------------------------- a real compiled text artifact

@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory, bert_dir):
    root = tmp_path_factory.mktemp("buckets")
    profile = root / "quick.toml"
    profile.write_text('precision = "int8"\nfp32_candidate = false\n[budgets]\nmin_cosine = 0.9\n[data]\ncalibration_samples = 8\neval_samples = 8\n'
                       "[benchmark]\nsequence_length = 32\nmin_runs = 10\nmin_seconds = 0.2\nmax_seconds = 5.0\n")
    out = root / "bundle"
    edgekit.compile(str(bert_dir), targets=["intel-cpu"], task="feature-extraction", profile=str(profile), output=out)
    return out


def _feed(length: int, batch: int = 1) -> dict:
    rng = np.random.default_rng(length)
    return {"input_ids": rng.integers(1000, 20000, (batch, length)).astype(np.int64),
            "attention_mask": np.ones((batch, length), np.int64), "token_type_ids": np.zeros((batch, length), np.int64)}


def _cosine(a, b) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_bucketed_outputs_match_the_dynamic_ir(text_bundle):
    xml = text_bundle / "intel-cpu" / "model.xml"
    dynamic = OpenVinoSession(xml, 1)
    bucketed = OpenVinoSession(xml, 1, length_buckets=(8, 16))
    assert bucketed.settings["length_buckets"] == [8, 16]
    assert bucketed.settings["length_bucket_inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert bucketed.output_names == dynamic.output_names and "last_hidden_state" in bucketed.output_names
    for length, batch in ((3, 1), (8, 1), (11, 1), (16, 2), (21, 1)):  # 21: longer than every bucket, runs as built
        feed = _feed(length, batch)
        want, got = dynamic.run(feed), bucketed.run(feed)
        assert [g.shape for g in got] == [w.shape for w in want]
        for w, g in zip(want, got):
            assert _cosine(w, g) > 0.999, (length, batch)
    assert set(bucketed._compiled_shapes) == {(1, 8), (1, 16), (2, 16)}
    assert bucketed._dynamic is not None  # compiled only when the 21-token input needed it


def test_compiled_shapes_are_bounded(text_bundle, monkeypatch):
    monkeypatch.setattr(runtimes.openvino, "MAX_COMPILED_SHAPES", 2)
    session = OpenVinoSession(text_bundle / "intel-cpu" / "model.xml", 1, length_buckets=(4, 8, 12))
    for length in (3, 7, 11, 3):
        session.run(_feed(length))
    assert list(session._compiled_shapes) == [(1, 12), (1, 4)]  # least recently used dropped first


def test_compile_records_and_verifies_buckets(text_bundle, tmp_path):
    settings = json.loads((text_bundle / "intel-cpu" / "runtime.json").read_text())
    assert settings["length_buckets"] == list(edgekit.config.load_target("intel-cpu").length_buckets)
    assert settings["length_bucket_inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    ok = CliRunner().invoke(main, ["verify", str(text_bundle)])
    assert ok.exit_code == 0, ok.output
    # The runtime.json's buckets are what verify and bench load with: a bad value is refused by name.
    copy = tmp_path / "copy"
    shutil.copytree(text_bundle, copy)
    settings["length_buckets"] = "all"
    (copy / "intel-cpu" / "runtime.json").write_text(json.dumps(settings))
    rehash(copy, "intel-cpu/runtime.json")  # consistent with the manifest: the record's own check refuses it
    result = CliRunner().invoke(main, ["bench", str(copy), "--duration", "0.2"])
    assert result.exit_code == 2 and "length_buckets" in result.output


def test_buckets_do_not_change_the_cached_artifact(text_bundle, bert_dir, tmp_path):
    """Buckets are a runtime setting: a target that differs only in them reuses the built artifact."""
    source = edgekit.config.load_target("intel-cpu").source
    mine = tmp_path / "intel-cpu.toml"
    text = open(source).read().replace("length_buckets = [", "length_buckets = [24, ")
    mine.write_text(text)
    profile = text_bundle.parent / "quick.toml"
    first = edgekit.compile(str(bert_dir), targets=["intel-cpu"], task="feature-extraction", profile=str(profile),
                            output=tmp_path / "a")
    second = edgekit.compile(str(bert_dir), targets=[str(mine)], task="feature-extraction", profile=str(profile),
                             output=tmp_path / "b")
    assert any(e["stage"] == "artifact" and e["outcome"] == "hit" for e in second.cache["events"]), second.cache
    assert (tmp_path / "a/intel-cpu/model.bin").read_bytes() == (tmp_path / "b/intel-cpu/model.bin").read_bytes()
    assert json.loads((tmp_path / "b/intel-cpu/runtime.json").read_text())["length_buckets"][0] == 16
    assert first.targets[0].verdict == "pass"


def test_report_and_firmware_header_name_the_buckets(text_bundle, tmp_path):
    report = (text_bundle / "report.md").read_text()
    assert "intel-cpu: runs in length buckets (16, 32," in report
    header = embed_c(text_bundle / "intel-cpu", tmp_path / "fw", "edgekit_intel_cpu")
    assert "_NUM_LENGTH_BUCKETS 10" in header and "_LENGTH_BUCKETS { 16, 32, 48, 64, 96, 128, 192, 256, 384, 512 }" in header
    assert "pad input_ids, attention_mask, token_type_ids with zeros" in header
