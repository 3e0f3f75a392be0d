"""Audio models: WAV clips through the model's feature extractor, built-in speech when no --data (issue 19)."""

from __future__ import annotations

import json
import shutil
import wave

import numpy as np
import pytest

import edgekit
from edgekit.data import SPEECH, read_wav, resample
from edgekit.errors import UsageError
from edgekit.source import infer_task

from models import tiny_wav2vec2


def _write(path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as clip:
        clip.setnchannels(channels)
        clip.setsampwidth(width)
        clip.setframerate(rate)
        clip.writeframes(samples.tobytes())


def test_wav_is_read_as_mono_floats_and_resampled(tmp_path):
    left = (np.sin(np.linspace(0, 20, 800)) * 16000).astype(np.int16)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    _write(tmp_path / "s.wav", stereo, 8000, channels=2)
    samples, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000 and samples.shape == (800,) and samples.dtype == np.float32
    assert np.allclose(samples, left / 32768.0 / 2, atol=1e-6)  # the mean of the two channels
    assert len(resample(samples, 8000, 16000)) == 1600
    _write(tmp_path / "u8.wav", np.full(100, 255, dtype=np.uint8), 16000, width=1)
    assert read_wav(tmp_path / "u8.wav")[0].max() == pytest.approx(127 / 128)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not a wav")
    with pytest.raises(UsageError, match="bad.wav: not a readable PCM WAV file"):
        read_wav(tmp_path / "bad.wav")


def test_flac_clips_are_read_through_soundfile(tmp_path, monkeypatch, quick_profile):
    import sys

    soundfile = pytest.importorskip("soundfile")
    data = tmp_path / "clips"
    for i, clip in enumerate(sorted(SPEECH.glob("*.wav"))[:8]):
        samples, rate = read_wav(clip)
        (data / f"word_{i % 2}").mkdir(parents=True, exist_ok=True)
        soundfile.write(str(data / f"word_{i % 2}" / clip.with_suffix(".flac").name), samples, rate, format="FLAC")
    flac = next(data.rglob("*.flac"))
    samples, rate = read_wav(flac)
    assert rate == 16000 and samples.dtype == np.float32
    assert np.allclose(samples, read_wav(SPEECH / flac.with_suffix(".wav").name)[0], atol=1 / 32768)  # lossless
    report = edgekit.compile(str(tiny_wav2vec2(tmp_path / "w2v", num_labels=2)), targets=["cpu"], profile=str(quick_profile),
                             data=str(data), output=tmp_path / "out", no_bench=True)
    assert report.data["origin"] == "clips/ (8 clips, labelled)"
    monkeypatch.setitem(sys.modules, "soundfile", None)  # not installed: one line that says what to do
    with pytest.raises(UsageError, match=r"FLAC needs the soundfile package: pip install edgekit\[audio\]"):
        read_wav(flac)


def test_the_built_in_speech_is_real_audio():
    clips = sorted(SPEECH.glob("*.wav"))
    assert len(clips) == 16
    for clip in clips:
        samples, rate = read_wav(clip)
        assert rate == 16000 and 0.8 < len(samples) / rate < 3.0 and np.abs(samples).max() > 0.1


def test_audio_classifiers_are_inferred():
    assert infer_task({"architectures": ["Wav2Vec2ForSequenceClassification"]}, "transformers") == "audio-classification"


def test_a_wav2vec2_classifier_compiles_on_the_built_in_speech(tmp_path, quick_profile):
    model = tiny_wav2vec2(tmp_path / "w2v")
    report = edgekit.compile(str(model), targets=["cpu", "intel-cpu"], profile=str(quick_profile), output=tmp_path / "out",
                             no_bench=True)
    assert report.task == "audio-classification" and not report.failed
    assert report.data["origin"].startswith("built-in speech (16 English commands") and not report.data["synthetic"]
    for target in report.targets:
        assert target.accuracy.top1_agreement is not None


def test_labelled_clips_in_subfolders_give_accuracy(tmp_path, quick_profile):
    data = tmp_path / "clips"
    for i, clip in enumerate(sorted(SPEECH.glob("*.wav"))):
        folder = data / ("word_0" if i % 2 else "word_1")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, folder / clip.name)
    model = tiny_wav2vec2(tmp_path / "w2v")
    report = edgekit.compile(str(model), targets=["cpu"], profile=str(quick_profile), data=str(data),
                             output=tmp_path / "out", no_bench=True)
    (cpu,) = report.targets
    assert "accuracy" in cpu.accuracy.task_metrics and report.data["labelled"]
    assert report.data["origin"].startswith("clips/ (16 clips")


def test_ctc_transcripts_are_collapsed_and_compared():
    from edgekit.tasks.sequence import collapse, edit_distance, transcripts

    assert collapse(np.array([0, 3, 3, 0, 3, 5, 5, 0]), blank=0) == [3, 3, 5]
    assert edit_distance([3, 3, 5], [3, 5]) == 1 and edit_distance([], [1, 2]) == 2

    def frames(ids):
        out = np.full((1, len(ids), 6), -5.0, dtype=np.float32)
        out[0, np.arange(len(ids)), ids] = 5.0
        return [out]

    expected = [frames([0, 3, 3, 0, 4, 0]), frames([0, 2, 0, 0, 2, 0])]
    outputs = [frames([0, 3, 0, 0, 4, 0]), frames([0, 2, 2, 0, 0, 0])]  # clip 2 loses its second 2
    found, _, _ = transcripts(expected, outputs, 0)
    assert found["blank_id"] == 0 and found["token_error_rate"] == pytest.approx(1 / 4) and found["identical"] == 0.5


def test_a_wav2vec2_ctc_recogniser_compiles_and_compares_transcripts(tmp_path, quick_profile):
    from models import tiny_wav2vec2_ctc

    report = edgekit.compile(str(tiny_wav2vec2_ctc(tmp_path / "ctc")), targets=["cpu", "intel-cpu"],
                             profile=str(quick_profile), output=tmp_path / "out", no_bench=True)
    assert report.task == "automatic-speech-recognition" and not report.failed
    for target in report.targets:
        a = target.accuracy
        assert a.top1_agreement is not None and 0.0 <= a.transcripts["token_error_rate"]
        assert 0.0 <= a.transcripts["identical"] <= 1.0


def test_transcripts_are_read_as_words_with_the_vocabulary(tmp_path):
    from edgekit.tasks.sequence import Vocabulary, word_accuracy, word_errors, words

    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "<s>": 1, "|": 2, "a": 3, "b": 4, "C": 5}))
    vocabulary = Vocabulary.beside(tmp_path)
    assert vocabulary.blank == 0 and vocabulary.text([1, 3, 4, 2, 5, 3, 2]) == "ab ca"
    assert Vocabulary.beside(tmp_path / "nowhere") is None
    assert words("Turn ON, the light!") == ["turn", "on", "the", "light"]
    wrong, count = word_errors(["turn on the light", "stop"], ["turn of the light", "stop it"])
    assert wrong.tolist() == [1.0, 1.0] and count.tolist() == [4.0, 1.0]
    entry = word_accuracy(["turn on the light", "stop the music"], ["turn on the light", "stop the music"],
                          ["turn of the light", "stop the music"])
    assert entry["original"] == 1.0 and entry["artifact"] == pytest.approx(1 - 1 / 7) and entry["n"] == 2
    assert entry["drop"] == pytest.approx(1 / 7) and len(entry["drop_ci95"]) == 2


def test_the_built_in_speech_has_its_transcripts():
    listed = [json.loads(line) for line in (SPEECH / "transcripts.jsonl").read_text().splitlines()]
    assert sorted(r["audio"] for r in listed) == sorted(p.name for p in SPEECH.glob("*.wav"))
    for record in listed:  # the file name begins with the first words spoken
        assert record["audio"].split("_", 1)[1].removesuffix(".wav").replace("_", " ") in record["text"]


def test_a_ctc_recogniser_is_judged_on_words_against_reference_transcripts(tmp_path, quick_profile):
    from models import tiny_wav2vec2_ctc

    model = tiny_wav2vec2_ctc(tmp_path / "ctc")
    options = dict(targets=["cpu"], profile=str(quick_profile), no_bench=True, shapes=["input_values=1,16000"],
                   overrides={"max_drop": {"word_accuracy": 1.0}, "min_top1_agreement": 0.5})  # no recovery: quick
    report = edgekit.compile(str(model), output=tmp_path / "out", **options)  # the built-in clips and their texts
    (cpu,) = report.targets
    entry = cpu.accuracy.task_metrics["word_accuracy"]
    assert entry["n"] == report.data["eval_samples"] and report.data["labelled"]
    assert entry["original"] <= 1.0 and 0.0 <= cpu.accuracy.transcripts["word_error_rate"]
    check = next(c for c in cpu.checks if c.budget == "max_drop.word_accuracy")
    assert check.applicable and check.measured == pytest.approx(entry["drop"])
    assert check.original == entry["original"] and check.artifact == entry["artifact"]
    assert "word accuracy (1 − WER)" in (tmp_path / "out" / "report.md").read_text()
    # --data: a .jsonl of clips and what they say; a clip that does not exist is a usage error naming it
    listing = tmp_path / "speech.jsonl"
    listing.write_text("".join(json.dumps({"audio": str(p), "text": "hello there"}) + "\n" for p in sorted(SPEECH.glob("*.wav"))[:6]))
    mine = edgekit.compile(str(model), output=tmp_path / "mine", data=str(listing), **options)
    assert mine.data["origin"].startswith("speech.jsonl (6 clips, transcribed")
    assert mine.targets[0].accuracy.task_metrics["word_accuracy"]["n"] == mine.data["eval_samples"]
    listing.write_text(json.dumps({"audio": "missing.wav", "text": "x"}) + "\n" + json.dumps({"audio": "m2.wav", "text": "y"}))
    with pytest.raises(UsageError, match=r"speech.jsonl: line 1: missing.wav: no such audio file"):
        edgekit.compile(str(model), output=tmp_path / "bad", data=str(listing), **options)


def test_without_a_vocabulary_word_accuracy_says_why(tmp_path, quick_profile):
    from models import tiny_wav2vec2_ctc

    model = tiny_wav2vec2_ctc(tmp_path / "ctc", vocabulary=False)
    options = dict(targets=["cpu"], profile=str(quick_profile), no_bench=True, shapes=["input_values=1,16000"])
    report = edgekit.compile(str(model), output=tmp_path / "out", overrides={"min_top1_agreement": 0.5}, **options)
    (cpu,) = report.targets
    assert "word_accuracy" not in (cpu.accuracy.task_metrics or {}) and "word_error_rate" not in cpu.accuracy.transcripts
    assert cpu.accuracy.transcripts["token_error_rate"] >= 0.0  # tokens are still compared
    with pytest.raises(UsageError, match=r"max_drop.word_accuracy.*no vocabulary \(vocab.json\)"):  # asked for: refused
        edgekit.compile(str(model), output=tmp_path / "asked", overrides={"max_drop": {"word_accuracy": 0.02}}, **options)


def test_whisper_is_judged_by_its_transcripts_through_the_generation_loop(tmp_path):
    """Encoder-decoder speech recognition (tasks/speech_to_text.py): the clips' features through the encoder, the
    transcript teacher-forced, greedy transcripts compared as words and against the built-in clips' texts."""
    from click.testing import CliRunner

    from edgekit.cli import main
    from edgekit.verify_bundle import verify
    from models import tiny_whisper

    assert infer_task({"architectures": ["WhisperForConditionalGeneration"], "is_encoder_decoder": True},
                      "transformers") == "automatic-speech-recognition"
    model = tiny_whisper(tmp_path / "whisper", steps=20)
    report = edgekit.compile(str(model), targets=["cpu", "intel-cpu"], output=str(tmp_path / "out"), cache=False,
                             no_bench=True)
    assert report.task == "automatic-speech-recognition" and not report.failed
    assert report.data["origin"].startswith("built-in speech (16 English commands") and report.data["labelled"]
    assert report.data["eval_samples"] == 15  # every clip but the one weight-only compression does not use
    for target in report.targets:
        a = target.accuracy
        assert a.token_agreement is not None and a.generation["positions"] > 0 and a.generation["ppl_original"] > 1
        assert 0.0 <= a.transcripts["word_error_rate"] and 0.0 <= a.transcripts["identical"] <= 1.0
        assert a.task_metrics["word_accuracy"]["n"] == 15
        assert any(c.budget == "max_drop.word_accuracy" and c.applicable for c in target.checks)
    assert {"encoder.onnx", "model.onnx"} <= {p.name for p in (tmp_path / "out" / "cpu").iterdir()}
    assert verify(tmp_path / "out").ok
    timed = CliRunner().invoke(main, ["bench", str(tmp_path / "out"), "--json", str(tmp_path / "bench.json")])
    assert timed.exit_code == 0, timed.output  # a built-in clip through the bundle's feature extractor


def test_a_folder_of_clips_without_transcripts_is_refused_for_whisper(tmp_path):
    from models import tiny_whisper

    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in sorted(SPEECH.glob("*.wav"))[:4]:
        shutil.copy(clip, clips / clip.name)
    with pytest.raises(UsageError, match="a speech recogniser is judged against what its clips say"):
        edgekit.compile(str(tiny_whisper(tmp_path / "whisper")), targets=["cpu"], data=str(clips),
                        output=str(tmp_path / "out"), no_bench=True)
