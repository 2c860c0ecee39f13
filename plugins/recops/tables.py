"""Reading the parquet tables that training, ranking and evaluation share.

The column lists of the training set, the users and the items tables, a reader that
names the file and any missing column, and the "newest row per key" rule.

This module is a leaf: it imports nothing from recops but the error tree, so training,
ranking, evaluation and compression can all use it without an import cycle. pyarrow is
imported inside ``read_parquet_columns``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from recops.errors import DataError

__all__ = [
    "ITEM_COLUMNS",
    "TRAINING_SET_COLUMNS",
    "USER_COLUMNS",
    "InputMissingError",
    "latest_rows",
    "read_parquet_columns",
    "read_training_set",
]

TRAINING_SET_COLUMNS = (
    "user_id",
    "item_id",
    "event_timestamp",
    "age",
    "gender",
    "occupation",
    "release_year",
    "genre_mask",
)
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "event_timestamp")
ITEM_COLUMNS = ("item_id", "release_year", "genre_mask", "event_timestamp")


class InputMissingError(DataError, FileNotFoundError):
    """An input file or folder a stage reads does not exist (the message names it).

    A ``FileNotFoundError`` as well, as the stages raised before the error tree existed,
    so callers that catch that keep working.
    """


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


def read_training_set(uri: str) -> pd.DataFrame:
    """Read the training set, one row per (user, item): a re-rating keeps the newest."""
    frame = read_parquet_columns(uri, TRAINING_SET_COLUMNS, "training set")
    frame = frame.sort_values(["user_id", "item_id", "event_timestamp"], kind="stable")
    # Duplicate pairs could land in train and test at once and leak the answer.
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="last")
    return frame.reset_index(drop=True)
