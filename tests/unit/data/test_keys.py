"""String keys get stable int64 ids, append-only; integer keys are their own ids."""

from __future__ import annotations

import pandas as pd
import pytest
from recops.config import Settings
from recops.data.keys import (
    UNKNOWN_ID,
    assign_ids,
    empty_key_table,
    intern,
    key_table_path,
    lookup_ids,
    lookup_keys,
    read_key_table,
)
from recops.errors import DataError


def test_new_keys_get_ids_in_sorted_order_and_keep_them(settings: Settings) -> None:
    first = intern(settings, "users", pd.Series(["c-2", "c-1", "c-2"]), key_type="string")
    assert first.tolist() == [2, 1, 2] and first.dtype == "int64"

    again = intern(settings, "users", pd.Series(["c-0", "c-1", "c-9"]), key_type="string")

    # Old keys keep their ids; new ones are appended after the largest id.
    assert again.tolist() == [3, 1, 4]
    table = read_key_table(settings, "users")
    assert table["key"].tolist() == ["c-1", "c-2", "c-0", "c-9"]
    assert table["id"].tolist() == [1, 2, 3, 4]
    assert not key_table_path(settings, "items").exists()


def test_lookups_translate_both_ways_and_never_fail_on_unknowns(settings: Settings) -> None:
    intern(settings, "items", pd.Series(["SKU-1", "SKU-2"]), key_type="string")

    ids = lookup_ids(settings, "items", pd.Series(["SKU-2", "nope", None]), key_type="string")
    keys = lookup_keys(settings, "items", pd.Series([1, 99]), key_type="string")

    assert ids.tolist() == [2, UNKNOWN_ID, UNKNOWN_ID]
    assert keys.tolist() == ["SKU-1", None]


def test_integer_keys_are_their_own_ids_and_write_nothing(settings: Settings) -> None:
    ids = intern(settings, "users", pd.Series(["7", "42"]), key_type="integer")

    assert ids.tolist() == [7, 42]
    assert not settings.keys_dir.exists()
    assert lookup_ids(settings, "users", pd.Series(["5", "x"]), key_type="integer").tolist() == [
        5,
        UNKNOWN_ID,
    ]
    assert lookup_keys(settings, "users", pd.Series([5]), key_type="integer").tolist() == [5]
    with pytest.raises(DataError, match="whole numbers"):
        intern(settings, "users", pd.Series(["1.5"]), key_type="integer")


def test_the_key_type_comes_from_the_dataset_spec(settings: Settings) -> None:
    # The default dataset (movielens-100k) declares integer keys.
    assert lookup_keys(settings, "items", pd.Series([3])).tolist() == [3]
    shop = settings.for_dataset("shop-synthetic")
    intern(shop, "users", pd.Series(["c-000196"]))
    assert lookup_ids(shop, "users", pd.Series(["c-000196"])).tolist() == [1]


def test_assign_ids_is_pure_and_refuses_empty_keys() -> None:
    table = empty_key_table()
    ids, updated = assign_ids(table, pd.Series(["b", "a"]))
    assert ids.tolist() == [2, 1] and table.empty and len(updated) == 2
    with pytest.raises(DataError, match="empty"):
        assign_ids(updated, pd.Series(["a", None]))


def test_an_unknown_side_is_refused(settings: Settings) -> None:
    with pytest.raises(DataError, match="not a key space"):
        key_table_path(settings, "orders")
