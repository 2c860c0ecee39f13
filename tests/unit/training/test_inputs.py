"""The two-tower's input pipeline: full batches of gathered rows, and the logQ."""

from __future__ import annotations

import numpy as np
import pytest
from recops.errors import ParamError
from recops.training.inputs import indexed_dataset, item_log_probabilities, make_dataset


def test_item_log_probabilities_are_row_frequencies() -> None:
    got = item_log_probabilities(np.array([7, 7, 3, 7]))
    np.testing.assert_allclose(got, np.log([0.75, 0.75, 0.25, 0.75]), rtol=1e-6)
    assert got.dtype == np.float32


def test_make_dataset_gives_full_shuffled_batches() -> None:
    features = {"user_idx": np.arange(10, dtype=np.int64), "age": np.arange(10) * 10}
    batches = list(make_dataset(features, batch_size=4, seed=0).as_numpy_iterator())
    assert len(batches) == 2  # the remainder is dropped
    for inputs, labels in batches:
        assert inputs["user_idx"].shape == (4,) and labels.tolist() == [0, 0, 0, 0]
        # Each row's features stay together.
        np.testing.assert_array_equal(inputs["age"], inputs["user_idx"] * 10)
    with pytest.raises(ParamError, match="batch_size=11 exceeds the 10 training rows"):
        make_dataset(features, batch_size=11, seed=0)


def test_indexed_dataset_in_order_keeps_the_remainder() -> None:
    columns = (np.arange(5), {"x": np.arange(5) * 2.0})
    dataset = indexed_dataset(columns, 5, batch_size=2, seed=0, shuffle=False, drop_remainder=False)
    got = [rows.tolist() for rows, _ in dataset.as_numpy_iterator()]
    assert got == [[0, 1], [2, 3], [4]]
