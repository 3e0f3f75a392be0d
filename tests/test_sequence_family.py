"""Per-token models are decided by the top-1 class of every real token (tasks/sequence.py)."""

from __future__ import annotations

import numpy as np
import pytest

import edgekit
from edgekit import tasks
from edgekit.config import Budgets

from models import tiny_bert


def _logits(classes_per_token: list[int], classes: int = 4, margin: float = 3.0) -> np.ndarray:
    out = np.zeros((1, len(classes_per_token), classes), dtype=np.float32)
    for t, c in enumerate(classes_per_token):
        out[0, t, c] = margin
    return out


def test_agreement_counts_real_tokens_only_and_its_interval_covers_it():
    family = tasks.for_task("token-classification")
    expected = [[_logits([0, 1, 2, 3])], [_logits([1, 1, 1, 1])]]
    # sample 0: one real token of three flipped; its padded last token is flipped too, and must not count
    outputs = [[_logits([0, 2, 2, 0])], [_logits([1, 1, 1, 1])]]
    masks = [np.array([[1, 1, 1, 0]]), np.array([[1, 1, 1, 1]])]
    fidelity, figures = family.evaluate(expected, outputs, ["logits"], None, masks)
    assert fidelity.top1_agreement == pytest.approx(6 / 7)
    low, high = fidelity.intervals["top1_agreement"]
    assert low <= 6 / 7 <= high and high <= 1.0
    assert figures["top1_agreement"][1] == pytest.approx(6 / 7)
    assert family.gating(fidelity) == ("top1_agreement", pytest.approx(6 / 7))


def test_cosine_is_reported_not_gated_where_top1_decides():
    family = tasks.for_task("token-classification")
    reference = [[_logits([0, 1, 2])]]
    assert "min_cosine" in family.secondary_for(reference, Budgets(min_top1_agreement=0.98))
    assert "min_cosine" not in family.secondary_for(reference, Budgets(min_top1_agreement=None))
    pooled = [[np.ones((1, 8), dtype=np.float32)]]  # no per-token output: judged as any tensor model (rule 4)
    assert "min_cosine" not in family.secondary_for(pooled, Budgets(min_top1_agreement=0.98))
    fidelity, _ = family.evaluate(pooled, pooled, ["pooled"], None, None)
    assert fidelity.top1_agreement is None and family.gating(fidelity)[0] == "cosine_min"


def test_a_token_classifier_compiles_and_is_judged_per_token(tmp_path, quick_profile):
    model = tiny_bert(tmp_path / "ner", task="token-classification", num_labels=5)
    report = edgekit.compile(str(model), targets=["cpu"], profile=str(quick_profile), output=tmp_path / "out",
                             no_bench=True, overrides={"min_top1_agreement": 0.5})
    (cpu,) = report.targets
    assert cpu.accuracy.top1_agreement is not None and 0.5 <= cpu.accuracy.top1_agreement <= 1.0
    checks = {c.budget: c for c in cpu.checks}
    assert checks["min_top1_agreement"].applicable and checks["min_top1_agreement"].gating
    assert not checks["min_cosine"].gating
    assert "top1_agreement" in cpu.accuracy.intervals
