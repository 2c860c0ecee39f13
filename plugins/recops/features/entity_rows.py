"""The published interactions as a DuckDB relation: the features stage's entity rows.

With the ``duckdb`` and ``spark`` engines the features stage never holds the whole
history in pandas: DuckDB reads the partitions, counts them, builds the user-history
snapshot, and hands the point-in-time joins their entity rows one sorted slice at a
time. The order is the published one (time, user, item), and rows equal in all three
keep their order in the files (partitions oldest first, then row number), which is
what a stable sort of the concatenated partitions gives, so every engine writes the
same training set.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from recops.errors import DataError
from recops.features.rolling_sql import sql_string

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

__all__ = ["EntityRows", "lacking_columns_error"]


def lacking_columns_error(
    partitions: Sequence[Path], lacking: list[str], have: list[str]
) -> DataError:
    """The error for partitions that lack published columns (every engine raises it)."""
    return DataError(
        f"interactions partitions in {partitions[0].parent.parent} lack the columns "
        f"{lacking} of the published layout (they hold {have})\n"
        "hint: re-import the dataset with `recops data import --spec FILE`"
    )


class EntityRows:
    """The interactions of ``partitions`` before ``as_of``, in the published columns.

    Use as a context manager; the connection closes on exit.

    Args:
        partitions: Published partition files, oldest first.
        as_of: Rows at or after this time are left out.
        columns: The columns to keep (the layout's interaction columns), in order.
        memory_limit: DuckDB's memory limit for the sort behind ``slices``, which spills
            to disk beyond it. The slices are read while the online store is materialized
            by a second process (``recops.features.materialize_child``), so it is kept low:
            at 20M events 512 MB took no longer than 2 GB and kept the stage's peak
            (both processes) at 3.3 GiB rather than 4.6.
        history_memory_limit: The limit while ``history_table`` runs (before that second
            process starts): its per-user lists cannot spill.

    Raises:
        DataError: A partition cannot be read, or lacks one of ``columns``.
    """

    def __init__(
        self,
        partitions: Sequence[Path],
        as_of: datetime,
        columns: Sequence[str],
        *,
        memory_limit: str = "512MB",
        history_memory_limit: str = "2GB",
    ) -> None:
        import duckdb

        if not partitions:
            raise DataError("no interactions partitions to read")
        self.columns = tuple(columns)
        self._limits = (memory_limit, history_memory_limit)
        # A private spill folder (DuckDB's default is ./.tmp in the working directory).
        self._tmp = tempfile.mkdtemp(prefix="recops-duckdb-")
        self._con: duckdb.DuckDBPyConnection = duckdb.connect(
            config={
                "memory_limit": memory_limit,
                "preserve_insertion_order": "true",
                "temp_directory": self._tmp,
            }
        )
        con = self._con
        con.execute("SET TimeZone = 'UTC'")
        files = ", ".join(sql_string(p) for p in partitions)
        try:
            have = [
                row[0]
                for row in con.sql(
                    f"DESCRIBE SELECT * FROM read_parquet([{files}], union_by_name = true)"
                ).fetchall()
            ]
        except duckdb.Error as exc:
            self.close()
            raise DataError(f"cannot read interactions partitions: {exc}") from exc
        lacking = [c for c in self.columns if c not in have]
        if lacking:
            self.close()
            raise lacking_columns_error(partitions, lacking, have)
        cols = ", ".join(f'"{c}"' for c in self.columns)
        # The file's place in the list and the row's place in the file break ties, as a
        # stable sort of the concatenation would.
        order = {sql_string(p): i for i, p in enumerate(partitions)}
        case = " ".join(f"WHEN {q} THEN {i}" for q, i in order.items())
        stamp = as_of.isoformat()
        con.execute(
            f"CREATE TEMP VIEW events AS SELECT {cols}, "
            f"CASE filename {case} END AS file_no, file_row_number AS row_no "
            f"FROM read_parquet([{files}], filename = true, file_row_number = true, "
            f"union_by_name = true) WHERE event_timestamp < TIMESTAMPTZ '{stamp}'"
        )

    def __enter__(self) -> EntityRows:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and remove its spill folder."""
        self._con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def counts(self) -> tuple[int, int, int]:
        """Rows, distinct users and distinct items."""
        (row,) = self._con.sql(
            "SELECT COUNT(*), COUNT(DISTINCT user_id), COUNT(DISTINCT item_id) FROM events"
        ).fetchall()
        return int(row[0]), int(row[1]), int(row[2])

    def history_table(self, history_max: int) -> pa.Table:
        """The user-history snapshot (``recops.features.history``) of these rows."""
        from recops.features.history import history_query, history_schema

        self._con.execute(
            "CREATE OR REPLACE TEMP VIEW history_events AS SELECT user_id, item_id, "
            "epoch_us(event_timestamp) AS ts_us, event_type FROM events"
        )
        sql = history_query("history_events", history_max)
        sort_limit, history_limit = self._limits
        self._con.execute(f"SET memory_limit = {sql_string(history_limit)}")
        try:
            return self._con.sql(sql).to_arrow_table().cast(history_schema())
        finally:
            self._con.execute(f"SET memory_limit = {sql_string(sort_limit)}")

    def slices(self, rows: int) -> Iterator[pd.DataFrame]:
        """The rows in the published order, ``rows`` at a time (at least one, maybe empty)."""
        cols = ", ".join(f'"{c}"' for c in self.columns)
        result = self._con.sql(
            f"SELECT {cols} FROM events ORDER BY event_timestamp, user_id, item_id, file_no, row_no"
        )
        reader = result.to_arrow_reader(rows)
        yielded = False
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        import pyarrow as pa

        # Batches come in DuckDB's vector sizes; they are gathered into slices of ``rows``.
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= rows:
                table = pa.Table.from_batches(pending)
                yield _frame(table.slice(0, rows))
                rest = table.slice(rows)
                pending, pending_rows = rest.to_batches(), rest.num_rows
                yielded = True
        if pending_rows or not yielded:
            schema = reader.schema
            yield _frame(pa.Table.from_batches(pending, schema=schema))


def _frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    return frame
