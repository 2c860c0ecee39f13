"""The published tables' columns and dtypes, as the contract checks them, for any dataset.

The interactions columns are the same for every dataset (``recops.layout``); the users
and items tables hold the key, one column per attribute of the dataset's spec and
``event_timestamp``. ``table_columns`` and ``table_types`` derive those per dataset from
its ``Layout``; the dtype names are the ones Great Expectations' pandas type check
compares (``dtype.type``).

This module is light (no pandas, no Great Expectations): it imports only the layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recops_models.feature_defs import STRING_KINDS

from recops.layout import INTERACTION_COLUMNS

if TYPE_CHECKING:
    from recops.layout import Layout

__all__ = [
    "FLOAT_TYPE",
    "INTERACTION_COLUMNS",
    "INTERACTION_TYPES",
    "KEY_COLUMNS",
    "KEY_TYPE",
    "PARTITION_FILE",
    "STRING_TYPE",
    "TABLES",
    "TIMESTAMP_TYPE",
    "attribute_type",
    "table_columns",
    "table_types",
]

#: The tables the contract checks, in the order reports list them.
TABLES: tuple[str, ...] = ("interactions", "users", "items")
#: The key column of each dimension table (and the interactions column that joins to it).
KEY_COLUMNS: dict[str, str] = {"users": "user_id", "items": "item_id"}
#: Keys are int64 everywhere: string keys are interned to ids at import.
KEY_TYPE = "int64"
#: GX's pandas type check compares ``dtype.type``; for a tz-aware column that is
#: ``pandas.Timestamp``, so "Timestamp" accepts tz-aware and rejects naive timestamps.
TIMESTAMP_TYPE = "Timestamp"
#: Numeric and timestamp attributes, and the event weight.
FLOAT_TYPE = "float64"
#: String columns read back from parquet are ``object``; GX then checks every value is a
#: ``str`` (nulls aside), and a pandas ``string`` column passes as well.
STRING_TYPE = "str"
#: The dtype of every interactions column.
INTERACTION_TYPES: dict[str, str] = {
    "user_id": KEY_TYPE,
    "item_id": KEY_TYPE,
    "event_timestamp": TIMESTAMP_TYPE,
    "event_type": STRING_TYPE,
    "weight": FLOAT_TYPE,
}
#: File name of one day's partition inside its ``date=YYYY-MM-DD/`` folder.
PARTITION_FILE = "part-0.parquet"


def attribute_type(kind: str) -> str:
    """The published dtype of an attribute of ``kind``.

    Categorical, multi-valued categorical and text attributes are strings; numeric and
    timestamp attributes (days since the epoch) are float64.
    """
    return STRING_TYPE if kind in STRING_KINDS else FLOAT_TYPE


def table_columns(layout: Layout) -> dict[str, tuple[str, ...]]:
    """The columns of each published table of ``layout``'s dataset, keyed by table."""
    return {
        "interactions": INTERACTION_COLUMNS,
        "users": layout.user_columns,
        "items": layout.item_columns,
    }


def table_types(layout: Layout) -> dict[str, dict[str, str]]:
    """The dtype of every column of each published table, keyed by table then column."""
    types: dict[str, dict[str, str]] = {"interactions": dict(INTERACTION_TYPES)}
    for table, features in (("users", layout.user_features), ("items", layout.item_features)):
        types[table] = {
            KEY_COLUMNS[table]: KEY_TYPE,
            **{f.name: attribute_type(f.kind) for f in features},
            "event_timestamp": TIMESTAMP_TYPE,
        }
    return types
