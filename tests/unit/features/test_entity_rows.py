"""The features stage's entity rows read by DuckDB (``recops.features.entity_rows``).

Checked against the pandas reference: the stable sort of the concatenated partitions,
ties (same time, user and item) kept in file order, cut into slices.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from recops.errors import DataError
from recops.features.entity_rows import EntityRows
from recops.features.history import history_table_sql

COLUMNS = ("user_id", "item_id", "event_timestamp", "event_type", "weight")


def _partitions(tmp_path: Path) -> tuple[list[Path], pd.DataFrame]:
    day0 = pd.Timestamp("2024-01-01", tz="UTC")
    frames = []
    paths = []
    for day in range(3):
        n = 40
        frame = pd.DataFrame(
            {
                "user_id": [i % 4 for i in range(n)],
                "item_id": [i % 3 for i in range(n)],
                # Few distinct times: many rows tie on (time, user, item) and differ
                # only in weight, so their order must come from the files.
                "event_timestamp": [day0 + pd.Timedelta(days=day, hours=i % 2) for i in range(n)],
                "event_type": ["view" if i % 5 else "purchase" for i in range(n)],
                "weight": [float(day * 100 + i) for i in range(n)],
            }
        ).astype({"event_timestamp": "datetime64[us, UTC]"})
        path = tmp_path / f"date=2024-01-0{day + 1}" / "part.parquet"
        path.parent.mkdir(parents=True)
        frame.to_parquet(path, index=False)
        frames.append(frame)
        paths.append(path)
    return paths, pd.concat(frames, ignore_index=True)


def test_slices_are_the_stable_sort_cut_into_pieces(tmp_path: Path) -> None:
    paths, whole = _partitions(tmp_path)
    as_of = datetime(2024, 1, 3, 1, tzinfo=UTC)  # drops the last day's second hour
    want = (
        whole[whole.event_timestamp < pd.Timestamp(as_of)]
        .sort_values(["event_timestamp", "user_id", "item_id"], kind="stable")
        .reset_index(drop=True)
    )
    with EntityRows(paths, as_of, COLUMNS) as rows:
        slices = list(rows.slices(7))
        assert rows.counts() == (len(want), want.user_id.nunique(), want.item_id.nunique())
    assert [len(s) for s in slices[:-1]] == [7] * (len(slices) - 1)
    assert 0 < len(slices[-1]) <= 7
    got = pd.concat(slices, ignore_index=True)
    assert list(got.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(got, want[list(COLUMNS)], check_dtype=False)
    assert str(got.event_timestamp.dtype) == "datetime64[us, UTC]"


def test_no_rows_still_gives_one_empty_slice_and_the_history_matches(tmp_path: Path) -> None:
    paths, whole = _partitions(tmp_path)
    with EntityRows(paths, datetime(2023, 1, 1, tzinfo=UTC), COLUMNS) as rows:
        slices = list(rows.slices(10))
        assert rows.counts() == (0, 0, 0)
    assert len(slices) == 1 and slices[0].empty and list(slices[0].columns) == list(COLUMNS)

    with EntityRows(paths, datetime(2030, 1, 1, tzinfo=UTC), COLUMNS) as rows:
        table = rows.history_table(5)
    want = history_table_sql(whole, history_max=5)
    assert isinstance(table, pa.Table) and table.equals(want)


def test_a_partition_without_a_layout_column_is_named(tmp_path: Path) -> None:
    paths, _ = _partitions(tmp_path)
    with pytest.raises(DataError, match=r"lack the columns \['rating'\]"):
        EntityRows(paths, datetime(2030, 1, 1, tzinfo=UTC), (*COLUMNS, "rating"))
    paths[1].write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read interactions partitions"):
        EntityRows(paths, datetime(2030, 1, 1, tzinfo=UTC), COLUMNS)
    with pytest.raises(DataError, match="no interactions partitions"):
        EntityRows([], datetime(2030, 1, 1, tzinfo=UTC), COLUMNS)
