"""Tests for the published schema: columns and dtypes derived from each dataset's layout."""

from __future__ import annotations

from _contract_tables import MOVIELENS, REPO, SHOP
from recops.dataset_spec import load_spec
from recops.layout import INTERACTION_COLUMNS, Layout, layout_from_spec
from recops.validation.schema import (
    INTERACTION_TYPES,
    KEY_COLUMNS,
    TABLES,
    attribute_type,
    table_columns,
    table_types,
)


def _layout(dataset: str) -> Layout:
    return layout_from_spec(load_spec(REPO / "datasets" / f"{dataset}.yaml"))


def test_interactions_are_the_same_for_every_dataset() -> None:
    assert tuple(INTERACTION_TYPES) == INTERACTION_COLUMNS
    assert INTERACTION_TYPES["weight"] == "float64" and INTERACTION_TYPES["event_type"] == "str"
    for dataset in (MOVIELENS, SHOP):
        assert table_columns(_layout(dataset))["interactions"] == INTERACTION_COLUMNS
    assert set(TABLES) == {"interactions", *KEY_COLUMNS}


def test_dimension_columns_follow_the_spec() -> None:
    shop = table_types(_layout(SHOP))

    assert table_columns(_layout(SHOP))["users"] == ("user_id", "country", "event_timestamp")
    assert shop["users"] == {"user_id": "int64", "country": "str", "event_timestamp": "Timestamp"}
    assert shop["items"] == {
        "item_id": "int64",
        "name": "str",
        "category": "str",
        "brand": "str",
        "price": "float64",
        "event_timestamp": "Timestamp",
    }
    movielens = table_types(_layout(MOVIELENS))
    assert list(movielens["items"]) == [
        "item_id", "title", "release_year", "genres", "event_timestamp"
    ]  # fmt: skip
    assert movielens["items"]["genres"] == "str" and movielens["users"]["age"] == "float64"


def test_attribute_types_by_kind() -> None:
    kinds = ("categorical", "multi_categorical", "text", "numeric", "timestamp")

    assert [attribute_type(k) for k in kinds] == ["str", "str", "str", "float64", "float64"]
