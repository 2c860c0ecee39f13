"""The two-tower's inputs: the spec fitted on the tables, tower inputs, the logQ, and the
pipeline of full batches of gathered rows."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny_data import TinyData
from recops.dataset_spec import load_spec
from recops.errors import ParamError
from recops.layout import layout_from_spec
from recops.tables import read_items, read_training_set, read_users
from recops.training.inputs import (
    catalogue,
    fit_model_spec,
    indexed_dataset,
    item_log_probabilities,
    item_tower_inputs,
    make_dataset,
    training_inputs,
    user_tower_inputs,
)


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


def test_spec_is_fitted_on_the_train_entities_rows(tiny_data: TinyData) -> None:
    layout = layout_from_spec(load_spec(tiny_data.spec_uri))
    rows = read_training_set(tiny_data.training_set_uri, layout)
    rows = rows[rows["user_id"] <= 30]
    users = read_users(tiny_data.users_uri, layout)
    items = read_items(tiny_data.items_uri, layout)
    spec = fit_model_spec(
        layout, rows=rows, users=users, items=items, embedding_dim=8, temperature=0.2
    )
    assert spec.user_ids == tuple(range(1, 31))
    assert [f.name for f in spec.user_features] == [f.name for f in layout.user_features]
    # Statistics come from one row per train user, not one per interaction.
    age = next(f for f in spec.user_features if f.kind == "numeric")
    expected = users.loc[users["user_id"] <= 30, age.name]
    assert age.mean == pytest.approx(expected.mean())
    assert age.std == pytest.approx(expected.std(ddof=0))

    catalogue_arrays = catalogue(spec, items)
    assert list(catalogue_arrays) == ["item_id", *(f.name for f in layout.item_features)]
    tower = item_tower_inputs(spec, catalogue_arrays)
    assert tower["item_idx"].shape == (tiny_data.n_items,)

    # An unknown user with no profile: index 0, empty strings and NaN, never an error.
    unknown = users.iloc[:1].assign(user_id=999).drop(columns="event_timestamp")
    unknown.loc[:, [f.name for f in layout.user_features]] = None
    got = user_tower_inputs(spec, unknown)
    assert got["user_idx"].tolist() == [0]
    for f in layout.user_features:
        value = got[f.name][0]
        assert (value == "") if f.is_string else np.isnan(value)


def test_negative_events_are_histories_but_never_positive_pairs(tiny_data: TinyData) -> None:
    from recops_models.two_tower import HISTORY_IDX

    layout = layout_from_spec(load_spec(tiny_data.spec_uri))
    rows = read_training_set(tiny_data.training_set_uri, layout)
    rows = rows[rows["user_id"] <= 20].sort_values(["user_id", "event_timestamp"])
    rows = rows.reset_index(drop=True)
    # Every third event of each user is a skip.
    skip = (rows.groupby("user_id").cumcount() % 3 == 1).to_numpy()
    rows["event_type"] = np.where(skip, "skip", "play")
    spec = fit_model_spec(
        layout,
        rows=rows,
        users=read_users(tiny_data.users_uri, layout),
        items=read_items(tiny_data.items_uri, layout),
        embedding_dim=8,
        temperature=0.2,
        history_length=5,
    )
    logq = item_log_probabilities(rows["item_id"].to_numpy())
    seen = ("play", "skip")
    every = training_inputs(spec, rows, logq, seen, "temporal")
    kept = training_inputs(spec, rows, logq, seen, "temporal", negative_types=("skip",))

    assert len(kept["user_idx"]) == int((~skip).sum()) < len(every["user_idx"])
    np.testing.assert_array_equal(kept["item_idx"], every["item_idx"][~skip])
    # The histories are those of all events: a skipped item is still in the user's past.
    np.testing.assert_array_equal(kept[HISTORY_IDX], every[HISTORY_IDX][~skip])
    skipped = set(spec.item_index(rows.loc[skip, "item_id"].to_numpy()).tolist())
    assert skipped & set(kept[HISTORY_IDX].ravel().tolist())
    # logQ is the frequency among the rows trained on.
    expected = item_log_probabilities(rows.loc[~skip, "item_id"].to_numpy())
    np.testing.assert_allclose(kept["item_logq"], expected)
