"""The published schema: column names, dtypes and allowed values of the three tables.

One declaration that both sides share: the contract (``recops.validation.suites``) checks
these columns and value sets, and ingestion (``recops.data``) writes them. ``genre_mask``
encodes genre names in the bit order of ``GENRES``.

This module is light (no pandas, no Great Expectations) and imports only the error tree.
"""

from __future__ import annotations

from collections.abc import Iterable

from recops.errors import DataError

__all__ = [
    "GENDERS",
    "GENRES",
    "INTERACTION_COLUMNS",
    "INTERACTION_TYPES",
    "ITEM_COLUMNS",
    "ML100K_OCCUPATIONS",
    "N_GENRES",
    "OCCUPATIONS",
    "PARTITION_FILE",
    "RATINGS",
    "RELEASE_YEARS",
    "USER_COLUMNS",
    "genre_mask",
]

#: ml-100k's genres, in the bit order of ``genre_mask``.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
N_GENRES = len(GENRES)
#: The 21 occupations of ml-100k's ``u.occupation``, sorted (the synthetic generator
#: assigns them by index, so the order is part of its output).
OCCUPATIONS: tuple[str, ...] = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment",
    "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
    "other", "programmer", "retired", "salesman", "scientist", "student", "technician",
    "writer",
)  # fmt: skip
#: The same occupations as a set: the allowed ``occupation`` values of the users table.
ML100K_OCCUPATIONS: frozenset[str] = frozenset(OCCUPATIONS)
GENDERS: frozenset[str] = frozenset({"M", "F"})
#: 0 means "release year unknown" in the items table.
RELEASE_YEARS: frozenset[int] = frozenset({0, *range(1900, 2101)})
RATINGS: tuple[int, ...] = (1, 2, 3, 4, 5)

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "event_timestamp")
# GX's pandas type check compares ``dtype.type``; for a tz-aware column that is
# ``pandas.Timestamp``, so "Timestamp" accepts tz-aware and rejects naive timestamps.
INTERACTION_TYPES: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "int64",
    "event_timestamp": "Timestamp",
}
USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "age",
    "gender",
    "occupation",
    "zip_code",
    "event_timestamp",
)
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "release_year",
    "genre_mask",
    "event_timestamp",
)
#: File name of one day's partition inside its ``date=YYYY-MM-DD/`` folder.
PARTITION_FILE = "part-0.parquet"


def genre_mask(names: Iterable[str]) -> int:
    """Bit mask of genre names; unknown names raise, so typos never pass silently."""
    mask = 0
    for name in names:
        if not name:
            continue
        try:
            mask |= 1 << GENRES.index(name)
        except ValueError as exc:
            raise DataError(f"unknown genre {name!r}; expected one of {GENRES}") from exc
    return mask
