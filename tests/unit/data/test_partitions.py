"""Tests for the published layout: idempotent daily partitions, history vs staging."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import (
    DataError,
    land,
    list_partitions,
    list_staged,
    publish,
    read_interactions,
    synthesize,
)
from recops.data.partitions import day_labels, parquet_bytes, write_parquet_atomic
from recops.validation import DataValidationError


def test_publish_is_idempotent_and_partitioned_by_day(settings: Settings) -> None:
    tables = synthesize(rows=2000, users=40, items=60, days=4, seed=1)
    first = publish(settings, *tables, source="synthetic")
    assert first.n_partitions == 4 and first.partitions_written == 4
    paths = list_partitions(settings)
    before = {p: p.read_bytes() for p in paths}
    second = publish(settings, *tables, source="synthetic")
    assert second.partitions_written == 0
    assert {p: p.read_bytes() for p in list_partitions(settings)} == before
    for path in paths:
        day = path.parent.name.removeprefix("date=")
        frame = pd.read_parquet(path)
        assert (frame["event_timestamp"].dt.strftime("%Y-%m-%d") == day).all()
    assert list_partitions(settings, until=first.last_date)[-1] == paths[-2]


def test_publish_drops_stale_partitions(settings: Settings) -> None:
    publish(
        settings, *synthesize(rows=2000, users=40, items=60, days=6, seed=1), source="synthetic"
    )
    publish(
        settings, *synthesize(rows=2000, users=40, items=60, days=3, seed=1), source="synthetic"
    )
    assert len(list_partitions(settings)) == 3


def test_bad_history_is_not_published(settings: Settings) -> None:
    inter, users, items = synthesize(rows=1500, users=40, items=60, days=6, seed=1)
    inter.loc[inter.index[:2], "item_id"] = 4040  # no such item

    with pytest.raises(DataValidationError, match=r"column=item_id.*\[4040\]") as info:
        land(settings, inter, users, items, source="synthetic", stage_last_days=1)

    assert not list_partitions(settings) and not list_staged(settings)
    assert json.loads(Path(str(info.value.report_uri)).read_text())["success"] is False


def test_stage_everything_and_nothing(settings: Settings) -> None:
    tables = synthesize(rows=600, users=30, items=40, days=3, seed=1)
    everything = land(settings, *tables, source="synthetic", stage_last_days=10)
    assert len(everything.staged_dates) == 3 and not list_partitions(settings)
    assert everything.history_report_uri == "" and settings.users_path.is_file()
    nothing = land(settings, *tables, source="synthetic", stage_last_days=0)
    assert nothing.staged_dates == [] and not list_staged(settings)
    assert len(list_partitions(settings)) == 3
    with pytest.raises(DataError, match="stage_last_days=-1"):
        land(settings, *tables, source="synthetic", stage_last_days=-1)


def test_parquet_writes_skip_identical_bytes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    path = tmp_path / "x" / "f.parquet"

    assert write_parquet_atomic(frame, path) is True
    assert write_parquet_atomic(frame, path) is False
    assert path.read_bytes() == parquet_bytes(frame)
    assert write_parquet_atomic(frame.assign(a=[1, 3]), path) is True


def test_read_interactions_names_the_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "part-0.parquet"
    bad.write_bytes(b"nope")

    with pytest.raises(DataError, match=f"cannot read interactions partition {bad}"):
        read_interactions([bad])
    with pytest.raises(DataError, match="no interactions partitions to read"):
        read_interactions([])


def test_day_labels_are_the_utc_days_strftime_writes() -> None:
    stamps = pd.Series(
        pd.to_datetime(
            ["2024-01-01T23:59:59Z", "2024-01-02T00:30:00+01:00", "2024-03-05T10:00:00Z"],
            utc=True,
        ).astype("datetime64[us, UTC]"),
        index=[7, 8, 9],
    )
    labels = day_labels(stamps)
    assert labels.tolist() == ["2024-01-01", "2024-01-01", "2024-03-05"]
    assert labels.tolist() == stamps.dt.strftime("%Y-%m-%d").tolist()
    assert labels.index.tolist() == [7, 8, 9]
    assert day_labels(pd.Series([], dtype="datetime64[us, UTC]")).tolist() == []
