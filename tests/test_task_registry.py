"""Task families are registered units: a family defined in a test decides the metrics of a compile, and the
built-in ones are chosen by task, never by a name the core spells."""

import numpy as np
import pytest

import edgekit
from edgekit import tasks
from edgekit.errors import UsageError
from edgekit.stages import metrics
from edgekit.tasks import TaskFamily, register


class SignAgreement(TaskFamily):
    """The share of output elements whose sign the artifact keeps: a figure no built-in family reports."""

    name = "sign-agreement"
    tasks = ("text-classification",)
    priority = 100

    def task_metrics(self, expected, outputs, output_names, labels, masks):
        result = metrics.TaskMetrics()
        same = [float(np.mean(np.sign(e[0]) == np.sign(o[0]))) for e, o in zip(expected, outputs)]
        result.task_metrics["sign_agreement"] = metrics.metric_entry(1.0, float(np.mean(same)))
        return result


@pytest.fixture
def sign_family():
    register(SignAgreement)
    yield tasks.get("sign-agreement")
    tasks.unregister("sign-agreement")


def test_builtin_families_by_task():
    assert tasks.names() == ["classifier", "ctc", "depth", "detection", "embedding", "generation", "segmentation", "sequence",
                             "speech2text", "tensor", "text2text", "vision-language"]
    assert tasks.for_task("text-classification").name == "classifier"
    assert tasks.for_task("image-classification").classifier is True
    assert tasks.for_task("feature-extraction").name == "embedding"
    assert tasks.for_task("token-classification").name == tasks.for_task("fill-mask").name == "sequence"
    for other in ("question-answering", None):
        assert tasks.for_task(other).name == "tensor"
    assert tasks.for_task("text2text-generation").name == "text2text"
    with pytest.raises(UsageError, match=r"unknown task family 'speech' \(registered: classifier, ctc, depth, detection, embedding, generation, segmentation, sequence, "
                                         r"speech2text, tensor, text2text, vision-language\)"):
        tasks.get("speech")


def test_a_family_registered_in_a_test_decides_the_metrics(sign_family, bert_dir, quick_profile, tmp_path):
    assert tasks.for_task("text-classification") is sign_family
    report = edgekit.compile(str(bert_dir), targets=["cpu"], profile=str(quick_profile), output=tmp_path / "out",
                             no_bench=True)
    (cpu,) = report.targets
    entry = cpu.accuracy.task_metrics["sign_agreement"]
    assert entry["original"] == 1.0 and 0.5 < entry["artifact"] <= 1.0
    assert cpu.accuracy.top1_agreement is None  # the classifier family's figure: not this family's


def test_metrics_evaluate_asks_the_family():
    ref = [[np.array([[2.0, 1.0, 0.0]])], [np.array([[0.0, 3.0, 1.0]])]]
    flipped = [[np.array([[1.0, 2.0, 0.0]])], [np.array([[0.0, 3.0, 1.0]])]]
    assert metrics.evaluate(ref, flipped, ["logits"], "classifier").top1_agreement == 0.5
    other = metrics.evaluate(ref, flipped, ["logits"], "no such family")
    assert other.top1_agreement is None and other.not_measured["top1_agreement"] == "not a classifier"


class FixedPhrases(SignAgreement):
    """A family that brings its own samples: three phrases, tokenised by the model's own tokenizer."""

    name = "fixed-phrases"
    PHRASES = ["the first phrase", "a second, longer phrase of words", "three", "and a fourth one"]

    def samples(self, request):
        from edgekit.data import Samples, text_feeds

        feeds = text_feeds(request.tokenizer, self.PHRASES, request.specs, request.max_length)
        return Samples(feeds[2:], feeds[:2], feeds[0], "four fixed phrases (the family's own)", False, [])


def test_a_family_decides_the_samples(bert_dir, quick_profile, tmp_path):
    register(FixedPhrases)
    try:
        report = edgekit.compile(str(bert_dir), targets=["cpu"], profile=str(quick_profile), output=tmp_path / "out",
                                 no_bench=True)
    finally:
        tasks.unregister("fixed-phrases")
    assert report.data["origin"] == "four fixed phrases (the family's own)"
    text = (tmp_path / "out" / "report.md").read_text()
    assert "four fixed phrases (the family's own) — 2 evaluation, 2 calibration samples" in text


def test_the_model_input_kind_is_decided_in_one_place():
    from edgekit.data import decide_modality
    from edgekit.graph import InputSpec

    image = [InputSpec("pixels", np.dtype(np.float32), (1, 3, 8, 8))]
    ids = [InputSpec("input_ids", np.dtype(np.int64), (1, 8)), InputSpec("attention_mask", np.dtype(np.int64), (1, 8))]
    assert decide_modality("text", image) == "text"  # a Hugging Face model's task decides
    assert decide_modality("tensor", image) == "image"  # an ONNX file: its one 4-D float input
    assert decide_modality("tensor", ids) == "tensor"
    assert decide_modality("tensor", ids, tokenizer=object()) == "text"  # a tokenizer beside it
    assert tasks.for_task(None).modality("tensor", image) == "image"
