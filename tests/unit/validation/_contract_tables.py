"""Canonical tables of two datasets for the validation tests (not a test module).

A MovieLens-like dataset (``datasets/movielens-100k.yaml``: explicit 1-5 values, no event
types, a multi-valued categorical with an allowed set) and the shop (``shop-synthetic``:
string keys already interned to ints, view / add_to_cart / purchase, a price without an
upper bound). ``make_home`` writes a dataset's spec to ``settings.data_dir / "spec.yaml"``
and its users and items tables in the published layout; the partitions are written here
with the layout's columns and dtypes, not by the importer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from recops.config import Settings
from recops.layout import SPEC_FILE, active_layout
from recops.validation import DataValidationError, ValidateConfig, validate_partition
from recops.validation.schema import INTERACTION_TYPES, table_types

REPO = Path(__file__).resolve().parents[3]
MOVIELENS = "movielens-100k"
SHOP = "shop-synthetic"
DAY = datetime(1998, 4, 22, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
VALID_FROM = DAY - timedelta(days=30)
#: GX type names (``recops.validation.schema``) as Arrow types.
ARROW_TYPES = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "str": pa.string(),
    "Timestamp": pa.timestamp("us", tz="UTC"),
}

#: One event: user id, item id, event type, weight, time.
Row = tuple[int, int, str, float, datetime]
ROW_FIELDS = ("user_id", "item_id", "event_type", "weight", "event_timestamp")


@dataclass(frozen=True)
class Dataset:
    """One dataset's good tables: columns by name, and good events of ``DAY``."""

    users: dict[str, list[Any]]
    items: dict[str, list[Any]]
    rows: list[Row]


DATASETS = {
    MOVIELENS: Dataset(
        users={
            "user_id": [1, 2, 3],
            "age": [24.0, 53.0, 33.0],
            "gender": ["M", "F", "M"],
            "occupation": ["technician", "other", "writer"],
            "zip_code": ["85711", None, "32067"],
        },
        items={
            "item_id": [10, 20, 30],
            "title": ["Toy Story (1995)", "GoldenEye (1995)", None],
            "release_year": [1995.0, 1995.0, 0.0],
            "genres": ["Animation|Children's|Comedy", "Action", "unknown"],
        },
        rows=[
            (1, 10, "interaction", 5.0, DAY + timedelta(hours=1)),
            (1, 20, "interaction", 3.0, DAY + timedelta(hours=2)),
            (2, 10, "interaction", 4.0, DAY + timedelta(hours=3)),
            (3, 30, "interaction", 1.0, NEXT_DAY - timedelta(microseconds=1)),
        ],
    ),
    SHOP: Dataset(
        users={"user_id": [1, 2, 3], "country": ["DE", "FR", "US"]},
        items={
            "item_id": [10, 20, 30],
            "name": ["Trail shoe", "Rain jacket", None],
            "category": ["shoes", "outerwear", "shoes"],
            "brand": ["acme", None, "zenith"],
            "price": [89.9, 120.0, 0.0],
        },
        rows=[
            (1, 10, "view", 1.0, DAY + timedelta(hours=1)),
            # A view and a purchase in the same second are two events, not a duplicate.
            (1, 10, "purchase", 5.0, DAY + timedelta(hours=1)),
            (2, 20, "add_to_cart", 3.0, DAY + timedelta(hours=3)),
            (3, 30, "view", 1.0, NEXT_DAY - timedelta(microseconds=1)),
        ],
    ),
}


def spec_dict(dataset: str) -> dict[str, Any]:
    """The shipped spec of ``dataset`` as a mapping, to edit."""
    loaded: dict[str, Any] = yaml.safe_load((REPO / "datasets" / f"{dataset}.yaml").read_text())
    return loaded


def write_spec(settings: Settings, spec: dict[str, Any]) -> Path:
    """Write ``spec`` where an import leaves it: ``settings.data_dir / "spec.yaml"``."""
    path = settings.data_dir / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def make_home(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    dataset: str,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Settings:
    """A ``RECOPS_HOME`` for ``dataset``: its spec (``edit`` applied) and good tables."""
    monkeypatch.setenv("RECOPS_HOME", str(root))
    monkeypatch.setenv("RECOPS_DATASET", dataset)
    settings = Settings.from_env()
    spec = spec_dict(dataset)
    if edit is not None:
        edit(spec)
    write_spec(settings, spec)
    write_users(settings)
    write_items(settings)
    return settings


def attribute(spec: dict[str, Any], table: str, name: str) -> dict[str, Any]:
    """The attribute ``name`` of ``table`` in a spec mapping (to edit in place)."""
    [found] = [a for a in spec[table]["attributes"] if a["name"] == name]
    return found


def _typed(table: str, settings: Settings, columns: dict[str, list[Any]]) -> pa.Table:
    types = table_types(active_layout(settings))[table]
    n = len(next(iter(columns.values())))
    columns = {**columns, "event_timestamp": columns.get("event_timestamp", [VALID_FROM] * n)}
    # A column the layout does not know (or a changed dtype) is left for Arrow to infer.
    return pa.table(
        {
            name: pa.array(values, ARROW_TYPES[types[name]]) if name in types else pa.array(values)
            for name, values in columns.items()
        }
    )


def write_users(settings: Settings, **changes: list[Any] | None) -> None:
    """Write the dataset's users table, with columns replaced (or dropped: None)."""
    columns = {**DATASETS[settings.dataset].users, **changes}
    kept = {k: v for k, v in columns.items() if v is not None}
    pq.write_table(_typed("users", settings, kept), settings.users_path)


def write_items(settings: Settings, **changes: list[Any] | None) -> None:
    """Write the dataset's items table, with columns replaced (or dropped: None)."""
    columns = {**DATASETS[settings.dataset].items, **changes}
    kept = {k: v for k, v in columns.items() if v is not None}
    pq.write_table(_typed("items", settings, kept), settings.items_path)


def good_rows(settings: Settings) -> list[Row]:
    """The dataset's good events of ``DAY``."""
    return list(DATASETS[settings.dataset].rows)


def interactions(rows: list[Row]) -> pa.Table:
    """Events as a partition in the canonical layout."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in ROW_FIELDS]
    by_name = dict(zip(ROW_FIELDS, columns, strict=True))
    return pa.table(
        {
            name: pa.array(list(by_name[name]), ARROW_TYPES[kind])
            for name, kind in INTERACTION_TYPES.items()
        }
    )


def partition(settings: Settings, table: pa.Table | bytes, day: datetime = DAY) -> Path:
    """Write a published partition of ``day``."""
    path = settings.interactions_dir / f"date={day.date().isoformat()}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, bytes):
        path.write_bytes(table)
    else:
        pq.write_table(table, path)
    return path


def config(settings: Settings, partition: Path, **overrides: Any) -> ValidateConfig:
    """The config that validates ``partition`` as ``DAY``'s (no Data Docs unless asked)."""
    fields: dict[str, Any] = {
        "interactions_path": str(partition),
        "users_path": str(settings.users_path),
        "items_path": str(settings.items_path),
        "interval_start": DAY,
        "interval_end": NEXT_DAY,
        "report_dir": str(settings.runs_dir / "run-1" / "validate"),
        "quarantine_dir": str(settings.quarantine_dir),
        "data_docs": False,
    }
    fields.update(overrides)
    return ValidateConfig(**fields)


def fail(settings: Settings, rows: list[Row], **overrides: Any) -> DataValidationError:
    """Validate ``rows`` as ``DAY``'s partition, expecting a blocking failure."""
    path = partition(settings, interactions(rows))
    with pytest.raises(DataValidationError) as info:
        validate_partition(config(settings, path, **overrides))
    assert str(path) in str(info.value)
    return info.value
