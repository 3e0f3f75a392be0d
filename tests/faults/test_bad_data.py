"""Bad numbers in `--data` are refused before any work, naming the first bad entry (issue 17 §8-9)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.data import read_npz
from edgekit.errors import UsageError
from edgekit.graph import InputSpec

FLOAT = [InputSpec("x", np.dtype(np.float32), (1, 4))]
INT = [InputSpec("ids", np.dtype(np.int32), (1, 4))]


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("value, words", [(np.nan, "nan at sample 2, index [3]"), (np.inf, "inf at sample 2"),
                                          (3e38 * 10, "at sample 2"), (-1e39, "not a finite float32")])
def test_non_finite_or_overflowing_floats_are_refused(tmp_path, value, words):
    x = np.zeros((4, 4), dtype=np.float64)
    x[2, 3] = value
    with pytest.raises(UsageError, match="array 'x' holds") as caught:
        read_npz(_npz(tmp_path, x=x), FLOAT)
    assert words in str(caught.value) and "d.npz" in str(caught.value)


def test_strings_and_complex_numbers_are_refused(tmp_path):
    with pytest.raises(UsageError, match="holds <U1 values, not numbers"):
        read_npz(_npz(tmp_path, x=np.array([["a"] * 4] * 2)), FLOAT)
    with pytest.raises(UsageError, match="complex numbers"):
        read_npz(_npz(tmp_path, x=np.ones((2, 4), dtype=np.complex64)), FLOAT)


def test_integers_beyond_the_input_type_are_refused(tmp_path):
    ids = np.zeros((3, 4), dtype=np.int64)
    ids[1, 0] = 2**40
    with pytest.raises(UsageError, match=r"outside the range of the input's int32"):
        read_npz(_npz(tmp_path, ids=ids), INT)


def test_good_numbers_still_pass(tmp_path):
    feeds, labels = read_npz(_npz(tmp_path, x=np.ones((3, 4)), labels=np.array([0, 1, 2])), FLOAT)
    assert len(feeds) == 3 and feeds[0]["x"].dtype == np.float32 and labels.tolist() == [0, 1, 2]
