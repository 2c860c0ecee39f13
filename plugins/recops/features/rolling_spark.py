"""The rolling snapshots on Spark (``RECOPS_ENGINE=spark``): the DuckDB query, in Spark SQL.

The partitions are read by Spark (``spark.read.parquet``) into a temporary view, and each
view's snapshots come from the very text of :func:`recops.features.rolling_sql.rolling_query`
with Spark's ``unix_micros`` for the epoch microseconds. Weights are summed as the same
exact decimals, so the answers equal DuckDB's and the pandas reference's; only the small
result (one row per entity and day) is collected, as Arrow.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.errors import DataError
from recops.features.rolling_sql import ROLLING_KEYS, RollingGrid, view_snapshots

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["rolling_tables_spark"]

#: The event columns the query reads, with their Spark types (for an empty history).
_EVENT_SCHEMA = "user_id BIGINT, item_id BIGINT, event_timestamp TIMESTAMP, weight DOUBLE"


def _events(spark: SparkSession, partitions: Sequence[Path]) -> DataFrame:
    """The events of ``partitions`` (only the columns the query reads)."""
    if not partitions:
        return spark.createDataFrame([], _EVENT_SCHEMA)
    return spark.read.parquet(*(str(p) for p in partitions)).select(
        "user_id", "item_id", "event_timestamp", "weight"
    )


def rolling_tables_spark(
    settings: Settings,
    partitions: Sequence[Path],
    views: Mapping[str, Sequence[str]],
    grid: RollingGrid,
) -> dict[str, pa.Table]:
    """Each view's snapshots for ``[emit_from, emit_to)``, computed by Spark SQL.

    Args:
        settings: Deployment settings (the Spark master).
        partitions: The published interaction partitions to read (parquet); on a
            cluster they must be on storage every executor reaches.
        views: View name -> its three feature columns.
        grid: The days and windows.

    Returns:
        As :func:`recops.features.rolling_sql.view_snapshots`, as DuckDB returns it.

    Raises:
        DataError: A partition cannot be read, or a view cannot be computed.
        SparkUnavailableError: The Spark session cannot start.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from recops.spark import spark_session

    spark = spark_session(settings)

    def run(view: str, sql: str) -> pa.Table:
        try:
            table = spark.sql(sql).toArrow()
        except (PySparkException, Py4JJavaError) as exc:
            raise DataError(f"cannot compute the rolling view {view}: {exc}") from exc
        # Collected rows keep the query's order on a local master, but a cluster's
        # partitions need not come back in order: sort here, as DuckDB returns it.
        return table.sort_by([("day", "ascending"), (ROLLING_KEYS[view], "ascending")])

    # A name of its own: the session is shared by the process (and by Feast).
    name = f"recops_events_{uuid.uuid4().hex}"
    try:
        _events(spark, partitions).createOrReplaceTempView(name)
    except (PySparkException, Py4JJavaError) as exc:
        raise DataError(f"cannot read interactions partitions: {exc}") from exc
    try:
        return view_snapshots(
            views, grid, events=name, epoch_us="unix_micros(event_timestamp)", run=run
        )
    finally:
        spark.catalog.dropTempView(name)
