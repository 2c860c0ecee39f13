"""Events name items of the catalogue: the checks before events are written.

Items are the catalogue: an event on an item the items table does not list is refused,
at import with the file's own keys (``check_references``), at ``POST /v1/events`` with a
422 (``known_ids`` feeds ``recops.data.event_log``), since nothing could recommend it and
the nightly's contract would block its whole day.

Users are not: a user may have events and no profile row (signed up after the export, a
key first seen by ``POST /v1/events``). The contract warns about those
(``ContractConfig.unknown_user_severity``), and the models read the missing profile as
missing values.

This module imports pandas and pyarrow only inside its functions.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from recops.dataset_spec import DatasetSpec

__all__ = ["check_references", "known_ids"]

_CACHE: dict[Path, tuple[tuple[int, int], frozenset[int]]] = {}
_CACHE_GUARD = threading.Lock()


def known_ids(path: Path, id_column: str) -> frozenset[int]:
    """The ids of a published users or items table, cached until the file changes.

    The events endpoint asks on every request; the file changes once a night at most.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    import pyarrow.parquet as pq

    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _CACHE_GUARD:
        cached = _CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    column = pq.read_table(path, columns=[id_column])[id_column]
    ids = frozenset(int(i) for i in column.to_pylist())
    with _CACHE_GUARD:
        _CACHE[path] = (stamp, ids)
    return ids


def check_references(
    spec: DatasetSpec,
    events: pd.DataFrame,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    sources: Mapping[str, str],
) -> None:
    """Refuse an import whose events name items its items table does not list, naming the
    file's own keys (the history's contract would name interned ids, never seen by the user).

    Args:
        spec: The dataset spec.
        events: The events as read (the spec's columns), row for row with ``interactions``.
        interactions: ``to_layout``'s converted events.
        items: ``to_layout``'s items table.
        sources: File name per table (``events``, ``items``), for the message.

    Raises:
        DataError: Naming the files, the column, the counts and a few of the keys.
    """
    from recops.errors import DataError

    unknown = ~interactions["item_id"].reset_index(drop=True).isin(set(items["item_id"].tolist()))
    if not unknown.any():
        return
    column = spec.events.item_key
    keys = events[column].reset_index(drop=True)[unknown].drop_duplicates()
    examples = ", ".join(repr(k) for k in keys.head(5).tolist())
    listing = sources.get("items", "the items file")
    raise DataError(
        f"{sources.get('events', 'the events file')}: {int(unknown.sum())} event(s) name "
        f"{len(keys)} {column} value(s) that {listing} does not list (spec field "
        f"'items.key' = {spec.items.key!r}), e.g. {examples}; nothing can recommend an item "
        f"outside the catalogue: add them to {listing} or drop their events"
    )
