"""Depth estimation (issue 19): a DPT depth estimator is judged by its depth map (δ1 against the original's), not by
the map's cosine."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgekit
from edgekit.tasks.depth import Depth, depth_output, pixel_counts

from models import images, tiny_dpt


@pytest.fixture(scope="module")
def dpt_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dpt")
    model, data = tiny_dpt(folder / "m"), images(folder / "i", 12, 64)
    report = edgekit.compile(str(model), targets=["cpu", "intel-npu"], data=str(data), output=str(folder / "out"),
                             cache=False, no_bench=True, overrides={"calibration_samples": 6})
    return folder / "out", report


def test_a_depth_estimator_is_inferred_and_gated_on_its_depth_map(dpt_report):
    out, report = dpt_report
    assert report.task == "depth-estimation"
    for row in json.loads((out / "report.json").read_text())["targets"]:
        budgets = {c["budget"]: c for c in row["budgets"]}
        assert budgets["min_depth_agreement"]["applicable"] and budgets["min_depth_agreement"].get("gating", True)
        assert budgets["min_cosine"].get("gating") is False  # the map's cosine is reported beside it
        depth = row["accuracy"]["depth"]
        assert 0 <= row["accuracy"]["depth_agreement"] <= 1 and depth["pixels_with_depth"] > 0 and depth["abs_rel"] >= 0
        assert len(row["accuracy"]["intervals"]["depth_agreement"]) == 2
    assert "depth within 1.25x" in (out / "report.md").read_text()


def test_depth_agreement_counts_pixels_within_a_factor_of_the_original():
    reference = np.array([[[1.0, 2.0, 4.0, 0.0]]])
    candidate = np.array([[[1.2, 3.0, 4.0, 5.0]]])  # 1.2x within, 1.5x not, equal within; no depth in the original: left out
    within, seen, error = pixel_counts(reference, candidate)
    assert (within, seen) == (2, 3) and abs(error - (0.2 + 0.5 + 0.0)) < 1e-12
    assert pixel_counts(reference, np.zeros_like(reference))[0] == 0  # an artifact that sees no depth agrees nowhere


def test_near_zero_background_is_not_judged_by_its_ratio():
    reference = np.array([[[100.0, 1e-4]]])  # the far background of a relative-depth model
    candidate = np.array([[[100.0, 5e-4]]])
    assert pixel_counts(reference, candidate)[:2] == (1, 1)


def test_the_depth_output_is_found_by_name_or_as_the_one_map():
    maps = [[np.zeros((1, 4, 4)), np.zeros((1, 2))]]
    assert depth_output(maps, ["predicted_depth", "other"]) == 0
    assert depth_output(maps, ["a", "b"]) == 0
    assert depth_output([[np.zeros((1, 2))]], ["x"]) is None
    assert Depth().secondary_for([[np.zeros((1, 2))]], None) == {}  # no depth map: judged as any tensor model
