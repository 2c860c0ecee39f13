"""Reading the shared parquet tables: missing files and columns are named; the column
lists and readers follow the dataset's layout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from _tiny_data import TinyData
from recops.dataset_spec import load_spec
from recops.errors import DataError
from recops.layout import INTERACTION_COLUMNS, Layout, layout_from_spec
from recops.tables import (
    InputMissingError,
    item_columns,
    latest_rows,
    read_items,
    read_parquet_columns,
    read_training_set,
    read_users,
    training_set_columns,
    user_columns,
)
from recops_models.feature_defs import FeatureDef


def _layout(*, explicit: bool) -> Layout:
    return Layout(
        name="t",
        user_key_type="integer",
        item_key_type="integer",
        user_features=(FeatureDef("country", "categorical"),),
        item_features=(FeatureDef("price", "numeric"),),
        event_weights={"view": 1.0, "purchase": 3.0},
        value_range=(1.0, 5.0) if explicit else None,
    )


def test_read_parquet_columns_names_the_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [1, 2], "price": [3.0, 4.0]}).to_parquet(path)
    frame = read_parquet_columns(str(path), ("price",), "items")
    assert frame.columns.tolist() == ["price"] and len(frame) == 2
    with pytest.raises(DataError, match=r"items .*items\.parquet lacks columns \['year'\]"):
        read_parquet_columns(str(path), ("item_id", "year"), "items")
    with pytest.raises(InputMissingError, match="items not found"):
        read_parquet_columns(str(tmp_path / "nope.parquet"), ("item_id",), "items")
    # Callers that caught the old built-in classes still do.
    assert issubclass(InputMissingError, FileNotFoundError)
    assert issubclass(DataError, ValueError)
    pd.DataFrame({"item_id": pd.Series([], dtype="int64")}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(DataError, match="has no rows"):
        read_parquet_columns(str(tmp_path / "e.parquet"), ("item_id",), "items")


def test_latest_rows_keeps_the_newest_per_key() -> None:
    frame = pd.DataFrame(
        {"user_id": [2, 1, 1, 2], "score": [20, 30, 31, 21], "event_timestamp": [1, 5, 9, 0]}
    )
    latest = latest_rows(frame, "user_id")
    assert latest.to_dict("list") == {
        "user_id": [1, 2],
        "score": [31, 20],
        "event_timestamp": [9, 1],
    }


def test_columns_follow_the_layout() -> None:
    layout = _layout(explicit=True)
    assert user_columns(layout) == ("user_id", "country", "event_timestamp")
    assert item_columns(layout) == ("item_id", "price", "event_timestamp")
    assert training_set_columns(layout) == (*INTERACTION_COLUMNS, "country", "price")


def _pairs(tmp_path: Path) -> str:
    row = {c: 0 for c in INTERACTION_COLUMNS} | {"country": "FR", "price": 1.0}
    frame = pd.DataFrame(
        [
            row | {"item_id": 5, "event_timestamp": 2, "event_type": "view", "weight": 1.0},
            row | {"item_id": 5, "event_timestamp": 1, "event_type": "purchase", "weight": 3.0},
            row | {"item_id": 4, "event_timestamp": 3, "event_type": "view", "weight": 1.0},
        ]
    ).assign(user_id=1)
    frame.to_parquet(tmp_path / "set.parquet")
    return str(tmp_path / "set.parquet")


def test_read_training_set_keeps_the_newest_rating_of_a_pair(tmp_path: Path) -> None:
    got = read_training_set(_pairs(tmp_path), _layout(explicit=True))
    assert got[["item_id", "weight"]].to_dict("list") == {"item_id": [4, 5], "weight": [1.0, 1.0]}


def test_read_training_set_keeps_the_strongest_implicit_event_of_a_pair(tmp_path: Path) -> None:
    got = read_training_set(_pairs(tmp_path), _layout(explicit=False))
    assert got[["item_id", "event_type"]].to_dict("list") == {
        "item_id": [4, 5],
        "event_type": ["view", "purchase"],
    }
    # A feature the spec declares but the training set lacks is named with the file.
    bigger = replace(_layout(explicit=False), user_features=(FeatureDef("city", "categorical"),))
    with pytest.raises(DataError, match=r"set\.parquet lacks columns \['city'\]"):
        read_training_set(str(tmp_path / "set.parquet"), bigger)


def test_read_users_and_items_of_the_tiny_spec(tiny_data: TinyData) -> None:
    layout = layout_from_spec(load_spec(tiny_data.spec_uri))
    users = read_users(tiny_data.users_uri, layout)
    items = read_items(tiny_data.items_uri, layout)
    assert tuple(users.columns) == user_columns(layout) and len(users) == tiny_data.n_users
    assert tuple(items.columns) == item_columns(layout) and len(items) == tiny_data.n_items
    assert users["user_id"].is_monotonic_increasing
