"""Audio models: WAV clips through the model's feature extractor, built-in speech when no --data (issue 19)."""

from __future__ import annotations

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
    found = transcripts(expected, outputs, 0)
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


def test_encoder_decoder_speech_recognition_is_refused_by_name():
    with pytest.raises(UsageError, match="WhisperForConditionalGeneration: encoder-decoder speech recognition"):
        infer_task({"architectures": ["WhisperForConditionalGeneration"]}, "transformers")
