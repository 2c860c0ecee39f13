"""Tiny users, items and interactions tables for the validation tests (not a test module)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from recops.config import Settings
from recops.validation import DataValidationError, ValidateConfig, validate_partition

DAY = datetime(1998, 4, 22, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
UTC_TS = pa.timestamp("us", tz="UTC")


def write_users(path: Path, genders: list[str] | None = None) -> None:
    table = pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "age": pa.array([24, 53, 33], pa.int64()),
            "gender": pa.array(genders or ["M", "F", "M"], pa.string()),
            "occupation": pa.array(["technician", "other", "writer"], pa.string()),
            "zip_code": pa.array(["85711", "94043", "32067"], pa.string()),
            "event_timestamp": pa.array([DAY - timedelta(days=30)] * 3, UTC_TS),
        }
    )
    pq.write_table(table, path)


def write_items(path: Path) -> None:
    table = pa.table(
        {
            "item_id": pa.array([10, 20, 30], pa.int64()),
            "title": pa.array(["Toy Story (1995)", "GoldenEye (1995)", "Unknown"], pa.string()),
            "release_year": pa.array([1995, 1995, 0], pa.int64()),
            "genre_mask": pa.array([0b11100, 0b10, 0], pa.int64()),
            "event_timestamp": pa.array([DAY - timedelta(days=30)] * 3, UTC_TS),
        }
    )
    pq.write_table(table, path)


def interactions(rows: list[tuple[int, int, int, datetime]]) -> pa.Table:
    users, items, ratings, stamps = (
        (list(col) for col in zip(*rows, strict=True)) if rows else ([], [], [], [])
    )
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "rating": pa.array(ratings, pa.int64()),
            "event_timestamp": pa.array(stamps, UTC_TS),
        }
    )


GOOD_ROWS = [
    (1, 10, 5, DAY + timedelta(hours=1)),
    (1, 20, 3, DAY + timedelta(hours=2)),
    (2, 10, 4, DAY + timedelta(hours=3)),
    (3, 30, 1, NEXT_DAY - timedelta(microseconds=1)),
]


def partition(settings: Settings, table: pa.Table | bytes) -> Path:
    path = settings.interactions_dir / f"date={DAY.date().isoformat()}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, bytes):
        path.write_bytes(table)
    else:
        pq.write_table(table, path)
    return path


def config(settings: Settings, partition: Path, **overrides: Any) -> ValidateConfig:
    fields: dict[str, Any] = {
        "interactions_path": str(partition),
        "users_path": str(settings.users_path),
        "items_path": str(settings.items_path),
        "interval_start": DAY,
        "interval_end": NEXT_DAY,
        "report_dir": str(settings.runs_dir / "run-1" / "validate"),
        "quarantine_dir": str(settings.quarantine_dir),
    }
    fields.update(overrides)
    return ValidateConfig(**fields)


def fail(settings: Settings, rows: list[tuple[int, int, int, datetime]]) -> DataValidationError:
    path = partition(settings, interactions(rows))
    with pytest.raises(DataValidationError) as info:
        validate_partition(config(settings, path))
    assert str(path) in str(info.value)
    return info.value
