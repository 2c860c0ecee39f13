"""Reading the shared parquet tables: missing files and columns are named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from recops.errors import DataError
from recops.tables import (
    TRAINING_SET_COLUMNS,
    InputMissingError,
    latest_rows,
    read_parquet_columns,
    read_training_set,
)


def test_read_parquet_columns_names_the_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [1, 2], "genre_mask": [3, 4]}).to_parquet(path)
    frame = read_parquet_columns(str(path), ("genre_mask",), "items")
    assert frame.columns.tolist() == ["genre_mask"] and len(frame) == 2
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
        {"user_id": [2, 1, 1, 2], "age": [20, 30, 31, 21], "event_timestamp": [1, 5, 9, 0]}
    )
    latest = latest_rows(frame, "user_id")
    assert latest.to_dict("list") == {
        "user_id": [1, 2],
        "age": [31, 20],
        "event_timestamp": [9, 1],
    }


def test_read_training_set_keeps_the_newest_rating_of_a_pair(tmp_path: Path) -> None:
    row = {c: 0 for c in TRAINING_SET_COLUMNS} | {"gender": "M", "occupation": "x"}
    frame = pd.DataFrame(
        [
            row | {"user_id": 1, "item_id": 5, "event_timestamp": 2, "age": 30},
            row | {"user_id": 1, "item_id": 5, "event_timestamp": 1, "age": 29},
            row | {"user_id": 1, "item_id": 4, "event_timestamp": 3, "age": 31},
        ]
    )
    frame.to_parquet(tmp_path / "set.parquet")
    got = read_training_set(str(tmp_path / "set.parquet"))
    assert got[["item_id", "age"]].to_dict("list") == {"item_id": [4, 5], "age": [31, 30]}
