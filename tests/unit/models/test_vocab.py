"""``recops_models.vocab``: raw id to dense index and row lookups shared by the models."""

from __future__ import annotations

import numpy as np
from recops_models.vocab import OOV_INDEX, lookup_index, rows_for_ids, sorted_vocab


def test_sorted_vocab_is_sorted_and_unique() -> None:
    np.testing.assert_array_equal(sorted_vocab([5, 1, 5, 3]), [1, 3, 5])
    np.testing.assert_array_equal(sorted_vocab(iter(["b", "a", "b"])), ["a", "b"])


def test_lookup_index_is_one_based_with_zero_for_unknown() -> None:
    vocab = sorted_vocab([10, 20, 30])
    got = lookup_index(vocab, np.array([30, 10, 15, 99, 20, -1]))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [3, 1, OOV_INDEX, OOV_INDEX, 2, OOV_INDEX])
    assert OOV_INDEX == 0
    strings = lookup_index(sorted_vocab(["F", "M"]), np.array(["M", "X", "F"]))
    np.testing.assert_array_equal(strings, [2, 0, 1])


def test_lookup_index_on_an_empty_vocab_keeps_the_shape() -> None:
    got = lookup_index(np.array([], np.int64), np.array([[1, 2], [3, 4]]))
    assert got.shape == (2, 2)
    assert got.dtype == np.int64
    assert not got.any()


def test_rows_for_ids_gives_zero_rows_for_unknown_ids() -> None:
    vocab = np.array([2, 4, 8], np.int64)
    table = np.arange(6, dtype=np.float64).reshape(3, 2) + 1.0
    got = rows_for_ids(vocab, table, np.array([8, 3, 2, 100]))
    np.testing.assert_array_equal(got, [[5.0, 6.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
