"""Stable int64 ids for string keys: the user's keys in, dense ids everywhere after.

Every stage after the import works on int64 ``user_id`` / ``item_id``. An integer key is
its own id (nothing is stored). A string key is interned at import: it gets the next free
id (1, 2, ...) and keeps it forever, in an append-only table per side,
``settings.keys_dir / "users.parquet"`` and ``"items.parquet"`` (columns ``key`` string,
``id`` int64). Keys in the user's own type are translated only at the edges: the import,
``recommend``, the service and the reports.

- ``assign_ids`` is the pure step (the import plans ids before it writes anything);
- ``intern`` assigns and writes; ``lookup_ids`` / ``lookup_keys`` translate, and an
  unknown key or id is never an error (-1, or a missing key).

This module imports pandas only inside its functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from recops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from recops.config import Settings

__all__ = [
    "KEY_COLUMNS",
    "SIDES",
    "UNKNOWN_ID",
    "Side",
    "assign_ids",
    "empty_key_table",
    "intern",
    "key_table_path",
    "key_type_of",
    "lookup_ids",
    "lookup_keys",
    "read_key_table",
    "write_key_table",
]

Side: TypeAlias = Literal["users", "items"]
#: The two key spaces.
SIDES: tuple[Side, ...] = ("users", "items")
#: Columns of a key table, in this order.
KEY_COLUMNS: tuple[str, str] = ("key", "id")
#: What ``lookup_ids`` returns for a key it has never seen.
UNKNOWN_ID = -1


def _check_side(side: str) -> Side:
    if side not in SIDES:
        raise DataError(f"side {side!r} is not a key space; expected 'users' or 'items'")
    return side  # type: ignore[return-value]


def key_table_path(settings: Settings, side: str) -> Path:
    """The key table of ``side`` (``users`` or ``items``) of the settings' dataset."""
    return settings.keys_dir / f"{_check_side(side)}.parquet"


def key_type_of(settings: Settings, side: str) -> str:
    """``string`` or ``integer``: the key type the settings' dataset declares for ``side``."""
    from recops.layout import active_spec

    spec = active_spec(settings)
    return str(getattr(spec, _check_side(side)).key_type)


def empty_key_table() -> pd.DataFrame:
    """A key table with no keys."""
    import pandas as pd

    return pd.DataFrame({"key": pd.Series([], dtype=object), "id": pd.Series([], dtype="int64")})


def read_key_table(settings: Settings, side: str) -> pd.DataFrame:
    """The key table of ``side``; empty when nothing was interned yet.

    Raises:
        DataError: The file exists but cannot be read or lacks ``key`` / ``id``.
    """
    import pandas as pd

    path = key_table_path(settings, side)
    if not path.is_file():
        return empty_key_table()
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read the key table {path}: {exc}") from exc
    if list(table.columns) != list(KEY_COLUMNS):
        raise DataError(f"{path}: a key table has columns key, id; got {list(table.columns)}")
    return pd.DataFrame({"key": table["key"].astype(object), "id": table["id"].astype("int64")})


def _as_text(keys: pd.Series) -> pd.Series:
    # Keys compare as text: a CSV may give "7" where parquet gave 7.
    return keys.map(lambda k: k if isinstance(k, str) else str(k))


def assign_ids(table: pd.DataFrame, keys: pd.Series) -> tuple[pd.Series, pd.DataFrame]:
    """Ids of ``keys`` in ``table``, giving each new key the next free id (pure).

    New keys are numbered in sorted order, so the ids do not depend on row order.

    Args:
        table: The current key table (``key``, ``id``).
        keys: String keys (no missing values).

    Returns:
        ``(ids, table)``: the int64 ids aligned with ``keys``, and the table with the new
        keys appended (the old rows unchanged and first).

    Raises:
        DataError: A key is missing.
    """
    import pandas as pd

    if keys.isna().any():
        raise DataError(f"{int(keys.isna().sum())} keys are empty; a key needs a value")
    text = _as_text(keys)
    known = dict(zip(table["key"], table["id"], strict=True))
    new = sorted(set(text.unique()) - known.keys())
    if new:
        start = int(table["id"].max()) + 1 if len(table) else 1
        added = pd.DataFrame(
            {"key": pd.Series(new, dtype=object), "id": range(start, start + len(new))}
        ).astype({"id": "int64"})
        table = pd.concat([table, added], ignore_index=True)
        known.update(zip(added["key"], added["id"], strict=True))
    ids = text.map(known).astype("int64")
    return ids, table


def write_key_table(settings: Settings, side: str, table: pd.DataFrame) -> bool:
    """Write ``side``'s key table atomically (unchanged bytes are left alone).

    Returns:
        True when the file was (re)written.
    """
    from recops.data.partitions import write_parquet_atomic

    frame = table[list(KEY_COLUMNS)].reset_index(drop=True)
    return write_parquet_atomic(frame, key_table_path(settings, side))


def _resolve(settings: Settings, side: str, key_type: str | None) -> str:
    return key_type if key_type is not None else key_type_of(settings, side)


def _integers(keys: pd.Series) -> pd.Series:
    """Integer keys as int64, ``UNKNOWN_ID`` where a value is not a whole number."""
    import pandas as pd

    numbers = pd.to_numeric(keys, errors="coerce")
    whole = numbers.notna() & (numbers == numbers.round())
    return numbers.where(whole, UNKNOWN_ID).astype("int64")


def intern(
    settings: Settings, side: str, keys: pd.Series, *, key_type: str | None = None
) -> pd.Series:
    """Ids of ``keys``, interning new string keys (written before returning).

    Args:
        settings: Whose dataset's key table to use.
        side: ``users`` or ``items``.
        keys: The user's keys.
        key_type: ``string`` or ``integer``; None reads the dataset's spec.

    Returns:
        int64 ids aligned with ``keys``. Integer keys are their own ids (nothing written).

    Raises:
        DataError: A key is missing, or an integer key is not a whole number.
    """
    if _resolve(settings, side, key_type) == "integer":
        import pandas as pd

        numbers = pd.to_numeric(keys, errors="coerce")
        bad = numbers.isna() | (numbers != numbers.round())
        if bad.any():
            sample = keys[bad].head(3).tolist()
            raise DataError(f"{side} keys must be whole numbers, e.g. not {sample}")
        return numbers.astype("int64")
    ids, table = assign_ids(read_key_table(settings, side), keys)
    write_key_table(settings, side, table)
    return ids


def lookup_ids(
    settings: Settings, side: str, keys: pd.Series, *, key_type: str | None = None
) -> pd.Series:
    """Ids of known keys; ``UNKNOWN_ID`` (-1) for a key never interned. Never raises on data.

    For an integer-keyed dataset a whole number is its own id (whether or not it appears
    in the data) and anything else is ``UNKNOWN_ID``.
    """
    if _resolve(settings, side, key_type) == "integer":
        return _integers(keys)
    table = read_key_table(settings, side)
    known = dict(zip(table["key"], table["id"], strict=True))
    return _as_text(keys.fillna("")).map(known).fillna(UNKNOWN_ID).astype("int64")


def lookup_keys(
    settings: Settings, side: str, ids: pd.Series, *, key_type: str | None = None
) -> pd.Series:
    """The user's keys of ``ids``: identity for integer keys; None for an unknown id."""
    import pandas as pd

    if _resolve(settings, side, key_type) == "integer":
        return ids.astype("int64")
    table = read_key_table(settings, side)
    known = dict(zip(table["id"], table["key"], strict=True))
    return pd.Series([known.get(int(i)) for i in ids], index=ids.index, dtype=object)
