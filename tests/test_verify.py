"""Fidelity figures: cosine, SNR, compare(), and strict-JSON reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgekit.stages import verify
from edgekit.stages.verify import SNR_CAP_DB, compare, cosine, snr_db


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- cosine

def test_cosine_identical_is_one():
    a = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cosine(a, 3.0 * a) == pytest.approx(1.0, abs=1e-12)  # scale does not matter


def test_cosine_opposite_is_minus_one():
    a = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    assert cosine(a, -a) == pytest.approx(-1.0, abs=1e-12)


def test_cosine_orthogonal_is_zero():
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == pytest.approx(0.0, abs=1e-12)


def test_cosine_flattens_shapes():
    a = np.arange(1, 7, dtype=np.float32)
    assert cosine(a.reshape(2, 3), a.reshape(3, 2)) == pytest.approx(1.0)


def test_cosine_both_all_zero_agree():
    z = np.zeros((2, 3), dtype=np.float32)
    assert cosine(z, z.copy()) == 1.0


def test_cosine_one_all_zero_disagrees():
    z = np.zeros(3, dtype=np.float32)
    a = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    assert cosine(z, a) == 0.0
    assert cosine(a, z) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_cosine_non_finite_is_zero(bad):
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = a.copy()
    b[1] = bad
    assert cosine(a, b) == 0.0
    assert cosine(b, a) == 0.0
    assert cosine(b, b) == 0.0  # a non-finite output agrees with nothing, not even itself


def test_cosine_never_nan_on_random_and_degenerate_inputs():
    rng = np.random.default_rng(1)
    cases = [(rng.standard_normal(8), rng.standard_normal(8)) for _ in range(20)]
    cases += [(np.zeros(4), np.zeros(4)), (np.zeros(4), np.ones(4)), (np.full(3, np.nan), np.full(3, np.nan)),
              (np.full(3, 1e-20), np.full(3, -1e-20)), (np.array([]), np.array([]))]
    for a, b in cases:
        value = cosine(a.astype(np.float32), b.astype(np.float32))
        assert math.isfinite(value)
        assert -1.0 <= value <= 1.0


def test_cosine_large_float32_outputs_are_finite():
    a = np.full(1000, 3e38, dtype=np.float32)  # near float32 max: float64 sums do not overflow
    assert cosine(a, a) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cosine_huge_float64_outputs_not_nan():
    a = np.array([1e200, 1e200], dtype=np.float64)
    value = cosine(a, a)
    assert not math.isnan(value)


# ---------------------------------------------------------------- snr

def test_snr_identical_is_capped():
    a = np.random.default_rng(2).standard_normal(100).astype(np.float32)
    assert snr_db(a, a) == SNR_CAP_DB == 200.0
    assert snr_db(np.zeros(5), np.zeros(5)) == SNR_CAP_DB


def test_snr_known_value():
    ref = np.ones(100, dtype=np.float64)
    cand = ref + 0.1  # signal 100, noise 1 -> 20 dB
    assert snr_db(ref, cand) == pytest.approx(20.0)


def test_snr_zero_signal_and_non_finite_noise():
    assert snr_db(np.zeros(4), np.ones(4)) == -SNR_CAP_DB
    assert snr_db(np.ones(4), np.array([1.0, np.inf, 1.0, 1.0])) == -SNR_CAP_DB
    assert snr_db(np.ones(4), np.array([1.0, np.nan, 1.0, 1.0])) == -SNR_CAP_DB


# ---------------------------------------------------------------- compare

def _two_output_case():
    rng = np.random.default_rng(3)
    refs, cands = [], []
    for i in range(4):
        logits = rng.standard_normal((1, 10)).astype(np.float32)
        hidden = rng.standard_normal((1, 4, 8)).astype(np.float32)
        refs.append([logits, hidden])
        # logits: small noise; hidden: exact except sample 2, which is sign-flipped
        cands.append([logits + 0.01 * rng.standard_normal(logits.shape).astype(np.float32),
                      -hidden if i == 2 else hidden.copy()])
    return refs, cands


def test_compare_per_output_figures():
    refs, cands = _two_output_case()
    fid = compare(refs, cands, ["logits", "hidden"], classifier=False)
    assert fid.samples == 4
    assert set(fid.per_output) == {"logits", "hidden"}
    logits, hidden = fid.per_output["logits"], fid.per_output["hidden"]
    assert set(logits) == {"cosine_min", "cosine_mean", "max_abs_error", "snr_db", "kind"} and logits["kind"] == "dense"
    assert 0.99 < logits["cosine_min"] <= logits["cosine_mean"] < 1.0
    assert hidden["cosine_min"] == pytest.approx(-1.0)
    assert hidden["cosine_mean"] == pytest.approx(0.5)  # (1 + 1 - 1 + 1) / 4
    expected_err = float(np.max(np.abs(2.0 * refs[2][1].astype(np.float64))))
    assert hidden["max_abs_error"] == pytest.approx(expected_err)
    # overall figures combine every output of every sample
    assert fid.cosine_min == pytest.approx(-1.0)
    assert fid.cosine_min <= fid.cosine_mean
    all_cos = [cosine(r, c) for ref, cand in zip(refs, cands) for r, c in zip(ref, cand)]
    assert fid.cosine_mean == pytest.approx(float(np.mean(all_cos)))
    assert fid.max_abs_error == pytest.approx(max(logits["max_abs_error"], hidden["max_abs_error"]))
    assert fid.snr_db == min(logits["snr_db"], hidden["snr_db"])
    assert logits["snr_db"] > 20.0
    assert fid.top1_agreement is None
    assert "top1_agreement" not in fid.to_dict()


def test_compare_identical_outputs():
    refs, _ = _two_output_case()
    fid = compare(refs, [[o.copy() for o in r] for r in refs], ["logits", "hidden"], classifier=True)
    assert fid.cosine_min == pytest.approx(1.0) and fid.cosine_mean == pytest.approx(1.0)
    assert fid.max_abs_error == 0.0
    assert fid.snr_db == SNR_CAP_DB
    assert fid.top1_agreement == 1.0


def test_compare_top1_agreement_three_of_four():
    refs, cands = [], []
    for i in range(4):
        ref = np.zeros((1, 5), dtype=np.float32)
        ref[0, i] = 5.0
        cand = ref.copy()
        if i == 1:  # the candidate's argmax moves to another class
            cand[0, 4] = 9.0
        refs.append([ref])
        cands.append([cand])
    fid = compare(refs, cands, ["logits"], classifier=True)
    assert fid.top1_agreement == 0.75
    d = fid.to_dict()
    assert d["top1_agreement"] == 0.75
    assert d["samples"] == 4
    # the same data without classifier=True has no top-1 figure at all
    plain = compare(refs, cands, ["logits"], classifier=False).to_dict()
    assert "top1_agreement" not in plain
    assert plain["cosine_min"] == d["cosine_min"]


def test_compare_all_zero_outputs_is_strict_json():
    refs = [[np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32)] for _ in range(3)]
    cands = [[np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32)] for _ in range(3)]
    fid = compare(refs, cands, ["a", "b"], classifier=True)
    assert fid.cosine_min == 1.0 and fid.cosine_mean == 1.0
    assert fid.snr_db == SNR_CAP_DB
    text = json.dumps(fid.to_dict(), allow_nan=False)
    parsed = strict_loads(text)
    assert parsed["per_output"]["a"]["cosine_min"] == 1.0


def test_compare_one_side_zero_and_non_finite_is_strict_json():
    refs = [[np.ones((1, 4), np.float32)], [np.ones((1, 4), np.float32)], [np.ones((1, 4), np.float32)]]
    cands = [[np.zeros((1, 4), np.float32)],
             [np.array([[1, np.nan, 1, 1]], np.float32)],
             [np.array([[1, np.inf, 1, 1]], np.float32)]]
    fid = compare(refs, cands, ["out"], classifier=True)
    assert fid.cosine_min == 0.0
    assert fid.cosine_mean == 0.0
    assert math.isfinite(fid.max_abs_error) and fid.max_abs_error > 1e300
    assert fid.snr_db == -SNR_CAP_DB
    for value in (fid.cosine_min, fid.cosine_mean, fid.max_abs_error, fid.snr_db, fid.top1_agreement):
        assert math.isfinite(value)
    strict_loads(json.dumps(fid.to_dict(), allow_nan=False))


def test_verify_reorders_candidate_outputs_by_name():
    class FakeSession:
        output_names = ["b", "a"]

        def run(self, feed):
            return [feed["x"] * 2, feed["x"]]  # b, a

    feeds = [{"x": np.array([1.0, 2.0], np.float32)}, {"x": np.array([3.0, -1.0], np.float32)}]
    references = [[f["x"], f["x"] * 2] for f in feeds]  # a, b
    fid = verify.verify(references, FakeSession(), feeds, ["a", "b"], classifier=False)
    assert fid.cosine_min == pytest.approx(1.0)
    assert fid.max_abs_error == 0.0


def test_padded_positions_are_not_compared():
    mask = np.array([[1, 1, 1, 0, 0]])
    ref = np.random.default_rng(0).standard_normal((1, 5, 4))
    got = ref.copy()
    got[0, 3:] = -ref[0, 3:] * 7  # the padded positions disagree completely
    pooled = ref[:, 0]
    fid = verify.compare([[ref, pooled]], [[got, pooled]], ["tokens", "pooled"], classifier=False, masks=[mask])
    assert fid.cosine_min == pytest.approx(1.0) and fid.max_abs_error == pytest.approx(0.0)
    unmasked = verify.compare([[ref, pooled]], [[got, pooled]], ["tokens", "pooled"], classifier=False)
    assert unmasked.cosine_min < 0.9
    # a real token that differs still counts
    got[0, 1] += 1.0
    assert verify.compare([[ref, pooled]], [[got, pooled]], ["tokens", "pooled"], False, masks=[mask]).max_abs_error == pytest.approx(1.0)
