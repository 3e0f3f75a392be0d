"""Issue 15 §4: text models are also judged on built-in text of other kinds, never calibrated on, reported apart."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgekit.cli import main
from edgekit.data import CORPUS, OUT_OF_DOMAIN, read_lines


def test_the_out_of_domain_set_is_other_text_than_the_corpus():
    ood, corpus = read_lines(OUT_OF_DOMAIN), read_lines(CORPUS)
    assert len(ood) >= 40 and not set(ood) & set(corpus)
    assert any(line.startswith("Traceback") for line in ood) and any("Agreement" in line for line in ood)


def test_a_text_model_reports_out_of_domain_fidelity_apart_also_from_the_cache(bert_dir, quick_profile, tmp_path):
    def build(name: str) -> dict:
        out = tmp_path / name
        result = CliRunner().invoke(main, ["compile", str(bert_dir), "--task", "feature-extraction", "-t", "cpu",
                                           "-p", str(quick_profile), "-o", str(out), "-q", "--no-bench"])
        assert result.exit_code in (0, 1), result.output
        assert "## Out-of-domain fidelity" in (out / "report.md").read_text()
        return json.loads((out / "report.json").read_text())["targets"][0]

    first = build("a")
    ood = first["out_of_domain"]
    assert ood["n"] == len(read_lines(OUT_OF_DOMAIN)) and -1 <= ood["cosine_min"] <= ood["cosine_mean"] <= 1
    assert 0 <= ood["retrieval_agreement_at_5"] <= 1
    second = build("b")  # samples and artifact from the build cache: the same out-of-domain figures
    assert second["out_of_domain"] == ood


def test_a_model_that_is_not_text_has_none(cnn_bundle):
    report = json.loads((cnn_bundle / "report.json").read_text())
    assert all("out_of_domain" not in t for t in report["targets"])
