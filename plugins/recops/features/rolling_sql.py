"""The rolling snapshots in SQL: DuckDB over the parquet partitions (the embedded engine).

The same answers as the pandas reference (``recops.features.rolling``), from one query per
view that never loads the events into Python:

1. each event's day is an integer counted from the grid's start, computed from epoch
   microseconds (date arithmetic on UTC timestamps was the slow part of a first attempt);
2. events are summed per key and day;
3. each key gets a dense run of days from its first event day to 30 days after its last
   one, so the trailing windows are plain ``ROWS`` frames;
4. a row is kept for day D when the key had events in the 30 days up to D, or in the 30
   days up to D-1 (the one "window just emptied" row that makes a join inside the TTL
   read zeros).

Weights are summed as ``DECIMAL(38, 10)``: exact and independent of summation order, so
a source built in one step or day by day is byte-identical, and any engine that sums
the same decimals gets the same means.

:func:`rolling_query` is written in the SQL that DuckDB and Spark share, so the Spark
engine runs the same text over its own view of the events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from recops.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ROLLING_KEYS",
    "WEIGHT_DECIMAL",
    "RollingGrid",
    "rolling_query",
    "rolling_tables_duckdb",
    "snapshot_table",
    "sql_string",
    "view_snapshots",
]

#: Each rolling view's entity key.
ROLLING_KEYS = {"user_activity": "user_id", "item_popularity": "item_id"}
#: The exact type weights are summed in (10 decimal places).
WEIGHT_DECIMAL = "DECIMAL(38, 10)"
_DAY_US = 86_400_000_000


def sql_string(value: str | Path) -> str:
    """``value`` as a SQL string literal (DuckDB and Spark SQL alike): quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def _epoch_us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


@dataclass(frozen=True, kw_only=True)
class RollingGrid:
    """The days a rolling computation covers and its two windows.

    Attributes:
        grid_start: Day 0 of the grid (a UTC midnight); events before it are ignored.
        emit_from: First day whose snapshots are returned.
        emit_to: The end (exclusive) of the days returned; later events are ignored.
        short_days: The short window, in days.
        long_days: The long window, in days.
    """

    grid_start: datetime
    emit_from: datetime
    emit_to: datetime
    short_days: int
    long_days: int


def rolling_query(
    view: str, grid: RollingGrid, *, events: str, epoch_us: str, features: Sequence[str]
) -> str:
    """The query giving ``view``'s snapshots for the days ``[emit_from, emit_to)``.

    Args:
        view: ``user_activity`` or ``item_popularity``.
        grid: The days and windows.
        events: A relation with the key columns, ``event_timestamp`` and ``weight``.
        epoch_us: The dialect's expression for ``event_timestamp`` in epoch
            microseconds (``epoch_us(event_timestamp)`` in DuckDB,
            ``unix_micros(event_timestamp)`` in Spark).
        features: The view's short count, long count and mean weight columns.

    Returns:
        SQL selecting ``key, day, short, long, mean`` where ``day`` is the grid day index
        (the snapshot is stamped at the end of that day), ordered by day then key.
    """
    key = ROLLING_KEYS[view]
    short_name, long_name, mean_name = features
    start_us = _epoch_us(grid.grid_start)
    n_days = (grid.emit_to - grid.grid_start).days
    first = (grid.emit_from - grid.grid_start).days
    short_days, long_days = grid.short_days, grid.long_days
    return f"""
WITH ev AS (
    SELECT {key} AS k,
           CAST(FLOOR(({epoch_us} - {start_us}) / {_DAY_US}) AS BIGINT) AS d,
           CAST(weight AS {WEIGHT_DECIMAL}) AS w
    FROM {events}
),
daily AS (
    SELECT k, d, COUNT(*) AS n, SUM(w) AS w
    FROM ev
    WHERE d >= 0 AND d < {n_days}
    GROUP BY k, d
),
spans AS (
    SELECT k, MIN(d) AS lo, LEAST(MAX(d) + {long_days}, {n_days - 1}) AS hi
    FROM daily
    GROUP BY k
),
grid AS (
    SELECT s.k, s.lo + g.i AS d
    FROM spans s, (SELECT i FROM range(0, {n_days}) AS t(i)) g
    WHERE s.lo + g.i <= s.hi
),
windows AS (
    SELECT g.k, g.d,
           SUM(COALESCE(daily.n, 0)) OVER w_short AS n_short,
           SUM(COALESCE(daily.n, 0)) OVER w_long AS n_long,
           SUM(COALESCE(daily.w, CAST(0 AS {WEIGHT_DECIMAL}))) OVER w_long AS w_long
    FROM grid g LEFT JOIN daily ON g.k = daily.k AND g.d = daily.d
    WINDOW w_short AS (PARTITION BY g.k ORDER BY g.d
                       ROWS BETWEEN {short_days - 1} PRECEDING AND CURRENT ROW),
           w_long AS (PARTITION BY g.k ORDER BY g.d
                      ROWS BETWEEN {long_days - 1} PRECEDING AND CURRENT ROW)
),
marked AS (
    SELECT *, LAG(n_long, 1, 0) OVER (PARTITION BY k ORDER BY d) AS n_prev
    FROM windows
)
SELECT k AS {key}, d AS day,
       CAST(n_short AS BIGINT) AS {short_name},
       CAST(n_long AS BIGINT) AS {long_name},
       CASE WHEN n_long > 0 THEN CAST(w_long AS DOUBLE) / CAST(n_long AS DOUBLE) END
           AS {mean_name}
FROM marked
WHERE d >= {first} AND (n_long > 0 OR n_prev > 0)
ORDER BY day, {key}
"""


def view_snapshots(
    views: Mapping[str, Sequence[str]],
    grid: RollingGrid,
    *,
    events: str,
    epoch_us: str,
    run: Callable[[str, str], pa.Table],
) -> dict[str, pa.Table]:
    """Each view's snapshots: its ``rolling_query`` run by an engine, as a snapshot table.

    Args:
        views: View name -> its three feature columns.
        grid: The days and windows.
        events: The engine's relation of the events (columns as ``rolling_query`` reads).
        epoch_us: The engine's epoch-microseconds expression (see ``rolling_query``).
        run: ``run(view, sql)`` executes the query on the engine and returns its rows,
            ordered by day then key, as Arrow; it raises ``DataError`` on failure.

    Returns:
        View name -> an Arrow table: key, ``event_timestamp`` (the end of the day, UTC),
        then the features; sorted by stamp and key. The caller casts it to the source's
        schema.
    """
    out: dict[str, pa.Table] = {}
    for view, features in views.items():
        sql = rolling_query(view, grid, events=events, epoch_us=epoch_us, features=features)
        out[view] = snapshot_table(run(view, sql), view, features, grid.grid_start)
    return out


def rolling_tables_duckdb(
    partitions: Sequence[Path], views: Mapping[str, Sequence[str]], grid: RollingGrid
) -> dict[str, pa.Table]:
    """Each view's snapshots for ``[emit_from, emit_to)``, computed by DuckDB.

    Args:
        partitions: The published interaction partitions to read (parquet).
        views: View name -> its three feature columns.
        grid: The days and windows.

    Returns:
        As :func:`view_snapshots`.

    Raises:
        DataError: A partition cannot be read.
    """
    import duckdb

    con = duckdb.connect(config={"threads": str(max(1, _threads()))})

    def run(view: str, sql: str) -> pa.Table:
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise DataError(f"cannot compute the rolling view {view}: {exc}") from exc

    try:
        con.execute("SET TimeZone = 'UTC'")
        if partitions:
            files = ", ".join(sql_string(p) for p in partitions)
            try:
                con.execute(
                    "CREATE TEMP VIEW events AS SELECT user_id, item_id, event_timestamp, "
                    f"weight FROM read_parquet([{files}])"
                )
            except duckdb.Error as exc:
                raise DataError(f"cannot read interactions partitions: {exc}") from exc
        else:
            con.execute(
                "CREATE TEMP VIEW events AS SELECT CAST(NULL AS BIGINT) AS user_id, "
                "CAST(NULL AS BIGINT) AS item_id, CAST(NULL AS TIMESTAMPTZ) AS "
                "event_timestamp, CAST(NULL AS DOUBLE) AS weight WHERE false"
            )
        return view_snapshots(
            views, grid, events="events", epoch_us="epoch_us(event_timestamp)", run=run
        )
    finally:
        con.close()


def snapshot_table(
    result: pa.Table, view: str, features: Sequence[str], grid_start: datetime
) -> pa.Table:
    """A ``rolling_query`` result as the view's snapshots, whichever engine ran it.

    The day index becomes the snapshot's stamp, the end of that day (grid start +
    day + 1 days, UTC), and the columns get the source's types, so DuckDB and Spark hand
    the caller the same table.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    days = pc.cast(pc.add(result["day"], 1), pa.int64())
    stamps = pc.add(pc.multiply(days, _DAY_US), _epoch_us(grid_start))
    key = ROLLING_KEYS[view]
    short_name, long_name, mean_name = features
    return pa.table(
        {
            key: pc.cast(result[key], pa.int64()),
            "event_timestamp": stamps.cast(pa.timestamp("us", tz="UTC")),
            short_name: pc.cast(result[short_name], pa.int64()),
            long_name: pc.cast(result[long_name], pa.int64()),
            mean_name: pc.cast(result[mean_name], pa.float64()),
        }
    )


def _threads() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
