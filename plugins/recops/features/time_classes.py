"""Point-in-time joins asked once per (key, time class) rather than once per entity row.

A point-in-time join gives a row at time ``t`` the newest feature row of its key stamped
at or before ``t`` (and, with a TTL, no older than ``t - ttl``). So the answer for a key
can only change at a *change point*: a feature row's timestamp ``S`` (it becomes
visible), ``S + ttl + 1 µs`` (it expires) and, where the source has one, its created
timestamp. Every time between two consecutive change points gets the same answer, so
rows of the same key in the same interval are one question for the offline store.

The rolling snapshots are stamped at UTC midnights with a whole-day TTL and the profiles
at a handful of valid-from times, so their change points are a few per day for all keys:
20M interactions ask Feast about (user, day) and (item, day) pairs, a few million and a
few hundred thousand, instead of 20M rows twice. The answers are the offline store's own
(``get_historical_features``, merged back by position), so they equal one call on every
row; ``tests/unit/features/test_time_classes.py`` checks that on rows placed exactly on
and around each change point. Where a source cannot be read here (not a local parquet
path) the class is the row's own time: still one question per distinct (key, time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from feast import FeatureStore

__all__ = ["JoinSide", "change_points", "join_by_time_class", "join_sides"]

#: The row number each question carries, so Feast's answers are put back in order.
_ASKED = "__recops_asked"


@dataclass(frozen=True)
class JoinSide:
    """The views of a feature service read by one set of join keys.

    Attributes:
        keys: The join keys (``("user_id",)``).
        refs: The ``view:feature`` references, in the service's order.
        points: The sorted change points of these views, in epoch microseconds; ``None``
            when a source could not be read (each distinct time is then its own class).
    """

    keys: tuple[str, ...]
    refs: tuple[str, ...]
    points: np.ndarray | None


def _source_path(view: object) -> Path | None:
    source = getattr(view, "batch_source", None)
    path = getattr(source, "path", None)
    if not path or "://" in str(path):
        return None
    local = Path(str(path))
    return local if local.exists() else None


def change_points(view: object) -> np.ndarray | None:
    """The times at which ``view``'s answer for some key may change, in epoch µs.

    Args:
        view: A Feast ``FeatureView`` on a local parquet source.

    Returns:
        The sorted distinct change points, or ``None`` when the source is not readable
        here (a remote path, or a source without a path).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _source_path(view)
    if path is None:
        return None
    source = view.batch_source  # type: ignore[attr-defined]
    columns = [source.timestamp_field]
    if source.created_timestamp_column:
        columns.append(source.created_timestamp_column)
    table = pq.read_table(path, columns=columns)
    found: list[np.ndarray] = []
    ttl = view.ttl  # type: ignore[attr-defined]
    ttl_us = int(ttl.total_seconds() * 1_000_000) if ttl else 0
    for i, name in enumerate(columns):
        stamps = table.column(name).cast(pa.timestamp("us", tz="UTC")).to_numpy().astype("int64")
        stamps = np.unique(stamps)
        found.append(stamps)
        if i == 0 and ttl_us:
            # Feast keeps a row while ``S + ttl >= t``: it is gone from the next µs on.
            found.append(stamps + ttl_us + 1)
    return np.unique(np.concatenate(found)) if found else np.empty(0, dtype="int64")


def join_sides(store: FeatureStore, service_name: str) -> list[JoinSide] | None:
    """The service's views grouped by their join keys, each group with its change points.

    Returns:
        One side per distinct set of join keys, in the order the service first names
        them; ``None`` when a projection renames its join keys (then only a plain call
        says what Feast would answer).
    """
    import numpy as np

    service = store.get_feature_service(service_name)
    sides: dict[tuple[str, ...], tuple[list[str], list[np.ndarray | None]]] = {}
    for projection in service.feature_view_projections:
        if projection.join_key_map or projection.name_alias:
            return None
        view = store.get_feature_view(projection.name)
        keys = tuple(view.join_keys)
        refs, points = sides.setdefault(keys, ([], []))
        name = projection.name_alias or projection.name
        refs += [f"{name}:{f.name}" for f in projection.features]
        points.append(change_points(view))
    out = []
    for keys, (refs, points) in sides.items():
        merged: np.ndarray | None = None
        if all(p is not None for p in points):
            merged = np.unique(np.concatenate([p for p in points if p is not None]))
        out.append(JoinSide(keys=keys, refs=tuple(refs), points=merged))
    return out


def _classes(stamps: pd.Series, points: np.ndarray | None) -> np.ndarray:
    """Each time's class: the last change point at or before it, in epoch µs.

    Times before every change point share one class (nothing is visible to them yet),
    one µs before the first point.
    """
    import numpy as np

    # ``asi8`` reads the epoch integers in place; a tz-aware ``to_numpy`` builds objects.
    times: np.ndarray = stamps.astype("datetime64[us, UTC]").array.asi8
    if points is None or not len(points):
        return times
    at = np.searchsorted(points, times, side="right") - 1
    classes: np.ndarray = np.where(at >= 0, points[np.maximum(at, 0)], points[0] - 1)
    return classes


def join_by_time_class(
    store: FeatureStore, entity_df: pd.DataFrame, sides: list[JoinSide]
) -> pd.DataFrame:
    """``entity_df`` with every side's features, asking Feast once per (keys, class).

    Args:
        store: The feature store.
        entity_df: Rows with every side's join keys and ``event_timestamp`` (µs or finer
            precision, UTC); its index and columns are kept as they are.
        sides: From ``join_sides``.

    Returns:
        ``entity_df`` with one column per feature, in the sides' order; row count, order
        and index unchanged.

    Raises:
        RuntimeError: Feast answered a different number of rows than it was asked.
    """
    import numpy as np
    import pandas as pd

    out = entity_df.copy()
    for side in sides:
        classes = _classes(entity_df["event_timestamp"], side.points)
        frame = pd.DataFrame({k: entity_df[k].to_numpy() for k in side.keys})
        frame["event_timestamp"] = classes
        codes = frame.groupby(list(frame.columns), sort=False, dropna=False).ngroup().to_numpy()
        _, first = np.unique(codes, return_index=True)
        asked = frame.iloc[first].reset_index(drop=True)
        asked["event_timestamp"] = pd.to_datetime(asked["event_timestamp"], unit="us", utc=True)
        asked[_ASKED] = np.arange(len(asked))
        answer = store.get_historical_features(entity_df=asked, features=list(side.refs)).to_df()
        if len(answer) != len(asked):
            raise RuntimeError(
                f"the offline store answered {len(answer)} rows for {len(asked)} questions"
            )
        answer = answer.sort_values(_ASKED).reset_index(drop=True)
        for ref in side.refs:
            name = ref.split(":", 1)[1]
            values = answer[name].take(codes)
            values.index = out.index
            out[name] = values
    return out
