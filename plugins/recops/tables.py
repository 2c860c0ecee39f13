"""Reading the parquet tables that training, ranking and evaluation share.

The column lists of the training set, the users and the items tables are the dataset's
published layout (``recops.layout.Layout``): the interaction columns plus one column per
declared attribute. Here are a reader that names the file and any missing column, the
"newest row per key" rule, and the readers of the three tables for a layout.

This module is a leaf: it imports nothing from recops but the error tree (the layout is
only a type here), so training, ranking, evaluation and compression can all use it
without an import cycle. pyarrow is imported inside ``read_parquet_columns``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from recops.errors import DataError

if TYPE_CHECKING:
    from recops.layout import Layout

__all__ = [
    "InputMissingError",
    "item_columns",
    "latest_rows",
    "read_entities",
    "read_items",
    "read_parquet_columns",
    "read_training_set",
    "read_users",
    "training_set_columns",
    "user_columns",
]


class InputMissingError(DataError, FileNotFoundError):
    """An input file or folder a stage reads does not exist (the message names it).

    A ``FileNotFoundError`` as well, as the stages raised before the error tree existed,
    so callers that catch that keep working.
    """


def training_set_columns(layout: Layout) -> tuple[str, ...]:
    """Columns of the training set: an interaction plus its user and item attributes."""
    return layout.training_set_columns


def user_columns(layout: Layout) -> tuple[str, ...]:
    """Columns of the published users table: ``user_id``, attributes, ``event_timestamp``."""
    return layout.user_columns


def item_columns(layout: Layout) -> tuple[str, ...]:
    """Columns of the published items table: ``item_id``, attributes, ``event_timestamp``."""
    return layout.item_columns


def read_parquet_columns(uri: str, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read ``columns`` from a parquet file, naming the file and any missing column.

    Args:
        uri: Parquet path.
        columns: Required columns.
        what: Human name of the table for error messages.

    Returns:
        The frame with exactly ``columns``.

    Raises:
        InputMissingError: If the file is missing (a ``FileNotFoundError``).
        DataError: If columns are missing or the table is empty (a ``ValueError``).
    """
    import pyarrow.parquet as pq

    if not Path(uri).exists():
        raise InputMissingError(f"{what} not found: {uri}")
    available = set(pq.read_schema(uri).names)
    missing = [c for c in columns if c not in available]
    if missing:
        raise DataError(f"{what} {uri} lacks columns {missing}")
    frame = pd.read_parquet(uri, columns=list(columns))
    if frame.empty:
        raise DataError(f"{what} {uri} has no rows")
    return frame


def latest_rows(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep the newest row (by ``event_timestamp``) per ``key``, sorted by ``key``."""
    ordered = frame.sort_values([key, "event_timestamp"], kind="stable")
    return ordered.drop_duplicates(key, keep="last").reset_index(drop=True)


def read_entities(uri: str, key: str, features: Sequence[str], what: str) -> pd.DataFrame:
    """One row per ``key`` (the newest) with ``key``, ``features`` and ``event_timestamp``.

    Args:
        uri: Parquet path of a users or items table.
        key: ``user_id`` or ``item_id``.
        features: Attribute columns to keep (a layout's, or a trained model's).
        what: Human name of the table for error messages.

    Raises:
        InputMissingError: If the file is missing.
        DataError: If a column is missing or the table is empty.
    """
    frame = read_parquet_columns(uri, (key, *features, "event_timestamp"), what)
    return latest_rows(frame, key)


def read_users(uri: str, layout: Layout) -> pd.DataFrame:
    """The users table of ``layout``, newest row per ``user_id``, sorted by it."""
    return read_entities(uri, "user_id", [f.name for f in layout.user_features], "users")


def read_items(uri: str, layout: Layout) -> pd.DataFrame:
    """The items table (the catalogue) of ``layout``, newest row per ``item_id``."""
    return read_entities(uri, "item_id", [f.name for f in layout.item_features], "items")


def read_training_set(uri: str, layout: Layout) -> pd.DataFrame:
    """Read the training set of ``layout``, one row per (user, item).

    Duplicate pairs could land in train and test at once and leak the answer, so each
    pair keeps one row: with an explicit value (a rating) the newest, as a re-rating
    replaces the old one; with implicit events the strongest (highest ``weight``, then
    newest), so a pair that was viewed and then bought counts as bought.

    Args:
        uri: Parquet path of the training set.
        layout: The dataset's layout (its ``training_set_columns`` are required).

    Returns:
        The rows sorted by ``user_id, item_id``.

    Raises:
        InputMissingError: If the file is missing.
        DataError: If a column is missing or the set is empty.
    """
    frame = read_parquet_columns(uri, training_set_columns(layout), "training set")
    order = ["user_id", "item_id", "event_timestamp"]
    if layout.value_range is None:
        order = ["user_id", "item_id", "weight", "event_timestamp"]
    frame = frame.sort_values(order, kind="stable")
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="last")
    return frame.reset_index(drop=True)
