"""Labelled --data: .jsonl, .csv, ImageFolder and .npz labels, mapped to class ids, carried through the
split; and every bad input as a UsageError naming the file, the line or entry, and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import LabelSpace, build_samples, read_csv, read_jsonl, resolve_labels
from edgekit.errors import UsageError
from edgekit.graph import InputSpec

I64 = np.dtype(np.int64)
F32 = np.dtype(np.float32)
TEXT_SPECS = [InputSpec("input_ids", I64, ("batch", "sequence")),
              InputSpec("attention_mask", I64, ("batch", "sequence"))]
IMAGE_SPEC = InputSpec("pixel_values", F32, (1, 3, 8, 8))
X_SPEC = [InputSpec("x", F32, (1, 4))]
SPACE = LabelSpace.from_config({"id2label": {"0": "class_0", "1": "class_1", "2": "class_2"},
                                "label2id": {"class_0": 0, "class_1": 1, "class_2": 2}})


class NumberTokenizer:
    """Stands in for a tokenizer: 'sample 7' becomes input_ids [[7, 7]], so a feed names its sample."""

    model_max_length = 512

    def __call__(self, text, return_tensors="np", truncation=True, max_length=None, padding=False):
        last = text.split()[-1] if text.split() else "0"
        n = int(last) if last.isdigit() else 0
        return {"input_ids": np.array([[n, n]]), "attention_mask": np.ones((1, 2), np.int64)}


def sample_ids(feeds, key="input_ids") -> list[int]:
    return [int(np.asarray(f[key]).ravel()[0]) for f in feeds]


def build_text(path, space=SPACE, n_calib=6, n_eval=4, seed=0, **kw):
    return build_samples(TEXT_SPECS, "text", path, n_calib, n_eval, seed, 16, tokenizer=NumberTokenizer(),
                         label_space=space, **kw)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def labelled_records(n=20):
    return [{"text": f"sample {i}", "label": f"class_{i % 3}"} for i in range(n)]


def assert_usage(fn, *fragments):
    with pytest.raises(UsageError) as info:
        fn()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- the label space

def test_label_space_from_config():
    assert SPACE.names == {"class_0": 0, "class_1": 1, "class_2": 2}
    assert SPACE.num_labels == 3
    assert LabelSpace.from_config({}).names == {} and LabelSpace.from_config({}).num_labels is None
    assert LabelSpace.from_config({"num_labels": 4}).num_labels == 4
    assert LabelSpace.from_config({"label2id": {"neg": 0, "pos": 1}}).names == {"neg": 0, "pos": 1}


def test_resolve_names_ids_and_digit_strings():
    ids, note = resolve_labels(Path("d"), ["class_2", 1, "0", np.int64(2)], ["a", "b", "c", "d"], SPACE)
    assert ids == [2, 1, 0, 2] and note is None


def test_sorted_names_without_a_label_map():
    ids, note = resolve_labels(Path("d"), ["dog", "cat", "dog", "7"], list("abcd"), LabelSpace(), sorted_names=True)
    assert ids == [1, 0, 1, 7]
    assert "cat=0" in note and "dog=1" in note


# ---------------------------------------------------------------- .jsonl

def test_jsonl_labels_travel_with_their_samples(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_records(20))
    s = build_text(path)
    assert s.labelled and len(s.evaluation_labels) == len(s.evaluation) == 4
    ev, cal = sample_ids(s.evaluation), sample_ids(s.calibration)
    assert set(ev).isdisjoint(cal) and len(cal) == 6
    assert s.evaluation_labels == [i % 3 for i in ev]
    assert "20 records, labelled" in s.origin
    # the same seed gives the same split as the same lines in a plain text file
    txt = tmp_path / "d.txt"
    txt.write_text("".join(f"sample {i}\n" for i in range(20)))
    plain = build_text(txt)
    assert sample_ids(plain.evaluation) == ev and plain.evaluation_labels is None
    assert build_text(path).evaluation_labels == s.evaluation_labels
    assert sample_ids(build_text(path, seed=5).evaluation) != ev


def test_jsonl_integer_labels_and_blank_lines(tmp_path):
    records = [json.dumps({"text": f"sample {i}", "label": i % 3}) for i in range(10)]
    path = write_jsonl(tmp_path / "d.jsonl", records[:5] + [""] + records[5:])
    s = build_text(path, n_calib=5, n_eval=5)
    assert s.evaluation_labels == [i % 3 for i in sample_ids(s.evaluation)]


def test_jsonl_without_labels(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"sample {i}"} for i in range(6)])
    s = build_text(path, n_calib=3, n_eval=3)
    assert s.evaluation_labels is None and not s.labelled and "labelled" not in s.origin


def test_jsonl_custom_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"sentence": f"sample {i}", "y": f"class_{i % 3}"} for i in range(8)])
    s = build_text(path, n_calib=4, n_eval=4, text_column="sentence", label_column="y")
    assert s.evaluation_labels == [i % 3 for i in sample_ids(s.evaluation)]


def test_labels_of_a_model_that_is_not_a_classifier_are_ignored(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_records(8))
    s = build_text(path, space=None, n_calib=4, n_eval=4)
    assert s.evaluation_labels is None and s.ignored_labels is True


# ---------------------------------------------------------------- .csv

def test_csv_labels(tmp_path):
    path = tmp_path / "d.csv"
    rows = ["id,text,label"] + [f'{i},"sample, quoted {i}",class_{i % 3}' for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    texts, labels, where = read_csv(path)
    assert texts[0] == "sample, quoted 0" and labels[:3] == ["class_0", "class_1", "class_2"] and where[0] == "line 2"
    s = build_text(path, n_calib=6, n_eval=6)
    assert s.evaluation_labels == [i % 3 for i in sample_ids(s.evaluation)]
    assert "12 records, labelled" in s.origin


def test_csv_without_label_column_and_custom_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body,target\n" + "".join(f"sample {i},{i % 3}\n" for i in range(6)))
    s = build_text(path, n_calib=3, n_eval=3, text_column="body")
    assert s.evaluation_labels is None  # no 'label' column: unlabelled
    s = build_text(path, n_calib=3, n_eval=3, text_column="body", label_column="target")
    assert s.evaluation_labels == [i % 3 for i in sample_ids(s.evaluation)]


def test_csv_with_bom(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufefftext,label\nsample 1,class_1\nsample 2,class_2\n".encode("utf-8"))
    assert read_csv(path)[1] == ["class_1", "class_2"]


# ---------------------------------------------------------------- ImageFolder

def write_image(path: Path, value: int, size=(10, 12)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def marker_processor(image):
    """A feed whose value is the image's grey level: a feed names its image."""
    return {"pixel_values": np.full((1, 3, 8, 8), float(np.asarray(image)[0, 0, 0]), np.float32)}


def build_images(folder, space, n_calib=3, n_eval=3):
    return build_samples([IMAGE_SPEC], "image", folder, n_calib, n_eval, 0, 16, image_processor=marker_processor,
                         label_space=space)


def test_image_folder_classes_mapped_through_id2label(tmp_path):
    space = LabelSpace.from_config({"id2label": {"0": "cat", "1": "dog", "2": "fox"}})
    for i in range(6):
        write_image(tmp_path / "imgs" / ("dog" if i % 2 else "fox") / f"{i}.png", 10 * i)
    s = build_images(tmp_path / "imgs", space)
    values = sample_ids(s.evaluation, "pixel_values")
    assert s.evaluation_labels == [1 if (v // 10) % 2 else 2 for v in values]
    assert "6 images, labelled" in s.origin


def test_image_folder_without_label_map_uses_sorted_names(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / ("b_class" if i < 2 else "a_class") / f"{i}.png", 10 * i)
    s = build_images(tmp_path / "imgs", LabelSpace(), n_calib=2, n_eval=2)
    values = sample_ids(s.evaluation, "pixel_values")
    assert s.evaluation_labels == [1 if v < 20 else 0 for v in values]
    assert any("a_class=0" in n and "b_class=1" in n for n in s.notes)


def test_flat_or_single_subfolder_is_unlabelled(tmp_path):
    for i in range(4):
        write_image(tmp_path / "flat" / f"{i}.png", i)
        write_image(tmp_path / "one" / "images" / f"{i}.png", i)
    assert build_images(tmp_path / "flat", SPACE, 2, 2).evaluation_labels is None
    assert build_images(tmp_path / "one", SPACE, 2, 2).evaluation_labels is None


# ---------------------------------------------------------------- .npz labels

def numbered(n: int) -> np.ndarray:
    return np.repeat(np.arange(n, dtype=np.float32)[:, None], 4, axis=1)


def build_npz(path, space=SPACE, n_calib=5, n_eval=5):
    return build_samples(X_SPEC, "tensor", path, n_calib, n_eval, 0, 16, label_space=space)


@pytest.mark.parametrize("labels", [np.arange(10) % 3, np.array([f"class_{i % 3}" for i in range(10)])])
def test_npz_labels_ids_or_names(tmp_path, labels):
    path = tmp_path / "d.npz"
    np.savez(path, x=numbered(10), labels=labels)
    s = build_npz(path)
    assert s.evaluation_labels == [i % 3 for i in sample_ids(s.evaluation, "x")]
    assert "labelled" in s.origin


# ---------------------------------------------------------------- bad input: file, line or entry, what was expected

def test_malformed_jsonl_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [labelled_records(1)[0], labelled_records(2)[1], '{"text": "x", "label": '])
    assert_usage(lambda: build_text(path), "bad.jsonl", "line 3", "not valid JSON", '"text"')


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [labelled_records(1)[0], '["sample", 1]'])
    assert_usage(lambda: build_text(path), "bad.jsonl", "line 2", "expected a JSON object")


def test_jsonl_without_the_text_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"sentence": "a", "label": "class_0"}])
    assert_usage(lambda: read_jsonl(path), "bad.jsonl", "line 1", "no 'text' field", "fields: sentence, label", "--text-column")


def test_jsonl_text_that_is_not_a_string(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": 12}])
    assert_usage(lambda: read_jsonl(path), "line 1", "'text' must be a string")


def test_jsonl_labelled_and_unlabelled_lines_mixed(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "class_0"}, {"text": "b"}])
    assert_usage(lambda: read_jsonl(path), "bad.jsonl", "line 2", "no 'label'", "line 1 has one")
    path = write_jsonl(tmp_path / "bad2.jsonl", [{"text": "a"}, {"text": "b", "label": "class_1"}])
    assert_usage(lambda: read_jsonl(path), "line 1", "no 'label'", "line 2 has one")


def test_jsonl_named_label_column_missing(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "class_0"}])
    assert_usage(lambda: read_jsonl(path, label_column="y"), "line 1", "no 'y' field", "--label-column")


def test_jsonl_not_utf8(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "\xff\xfe"}\n')
    assert_usage(lambda: read_jsonl(path), "bad.jsonl", "not UTF-8")


def test_csv_without_the_text_column_lists_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sentence,label\na,class_0\n")
    assert_usage(lambda: build_text(path), "bad.csv", "no column 'text'", "columns: sentence, label", "--text-column")


def test_csv_named_label_column_missing(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\na,class_0\n")
    assert_usage(lambda: read_csv(path, label_column="y"), "no column 'y'", "columns: text, label")


def test_csv_row_with_wrong_field_count(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\na,class_0\nb,class_1,extra\n")
    assert_usage(lambda: read_csv(path), "bad.csv", "line 3", "3 fields, the header has 2")


def test_csv_empty_label(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\na,class_0\nb,\n")
    assert_usage(lambda: read_csv(path), "line 3", "empty 'label'")


def test_empty_csv(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("")
    assert_usage(lambda: read_csv(path), "bad.csv", "header row")


def test_label_the_model_does_not_know(tmp_path):
    records = labelled_records(6)
    records[3]["label"] = "class_9"
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    assert_usage(lambda: build_text(path), "bad.jsonl", "line 4", "'class_9'", "known: class_0, class_1, class_2")


def test_label_id_out_of_range(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 3}])
    assert_usage(lambda: build_text(path), "line 2", "label 3", "0..2")


def test_label_that_is_neither_name_nor_id(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": 0.5}, {"text": "b", "label": 1}])
    assert_usage(lambda: build_text(path), "line 1", "neither a class name nor an integer class id")


def test_class_name_without_a_label_map(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", labelled_records(4))
    assert_usage(lambda: build_text(path, space=LabelSpace()), "line 1", "no id2label", "integer class ids")


def test_unknown_label_lists_only_a_few(tmp_path):
    space = LabelSpace.from_config({"id2label": {str(i): f"c{i}" for i in range(50)}})
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "c1"}, {"text": "b", "label": "zz"}])
    message = assert_usage(lambda: build_text(path, space=space), "'zz'", "c0, c1, c2, c3, c4, ...")
    assert "c49" not in message


def test_image_folder_class_the_model_does_not_know(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / ("class_1" if i % 2 else "wolf") / f"{i}.png", i)
    assert_usage(lambda: build_images(tmp_path / "imgs", SPACE, 2, 2), str(tmp_path / "imgs"), "subfolder 'wolf'", "known: class_0")


def test_image_that_cannot_be_decoded(tmp_path):
    for i in range(3):
        write_image(tmp_path / "imgs" / f"class_{i % 2}" / f"{i}.png", i)
    broken = tmp_path / "imgs" / "class_1" / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    assert_usage(lambda: build_images(tmp_path / "imgs", SPACE, 2, 2), "broken.png", "not a readable image")


@pytest.mark.parametrize("labels, fragments", [
    (np.arange(4), ["'labels' has 4 entries", "hold 5 samples"]),
    (np.linspace(0, 1, 5), ["'labels' has dtype float64", "integer class ids or class-name strings"]),
    (np.zeros(5, bool), ["dtype bool"]),
    (np.zeros((5, 1), np.int64), ["'labels' has shape [5, 1]", "shape [5]"]),
])
def test_npz_bad_labels(tmp_path, labels, fragments):
    path = tmp_path / "bad.npz"
    np.savez(path, x=numbered(5), labels=labels)
    assert_usage(lambda: build_npz(path, n_calib=2, n_eval=2), "bad.npz", *fragments)


def test_npz_object_labels_are_refused_without_pickle(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=numbered(3), labels=np.array([1, "a", None], dtype=object))
    assert_usage(lambda: build_npz(path, n_calib=1, n_eval=1), "bad.npz", "array 'labels' cannot be read")


def test_npz_label_the_model_does_not_know(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=numbered(4), labels=np.array(["class_0", "class_1", "nope", "class_2"]))
    assert_usage(lambda: build_npz(path, n_calib=2, n_eval=2), "bad.npz", "labels[2]", "'nope'", "known: class_0")


def test_jsonl_given_to_an_image_model(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", labelled_records(4))
    assert_usage(lambda: build_samples([IMAGE_SPEC], "image", path, 2, 2, 0, 16), "a .jsonl file needs a text model")
