"""Crafted canonical data where a point-in-time leak would show, for two dataset specs.

The tables are in the published layout (``recops.layout``), written straight into a
settings home with the dataset's spec copied beside them, as the import leaves them, so
the features stage is tested on its own:

- ``movielens-100k`` (the shipped spec): explicit ratings as weights, numeric, categorical,
  text and multi-valued attributes, some of them null;
- ``shop-synthetic`` (the shipped spec): view / add_to_cart / purchase events weighted by
  type, a categorical user attribute, products with a text name, a nullable brand and a
  price; its keys are the int ids the import interned.

Profiles change after some labels, events sit exactly on midnight and share a second,
and one user comes back after the rolling snapshot's TTL has expired.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from recops.config import REPO_ROOT, Settings

if TYPE_CHECKING:
    from feast import FeatureStore

DAY0 = pd.Timestamp("2024-03-01", tz="UTC")
DATASETS = ("movielens-100k", "shop-synthetic")
#: The published partition file name (``recops.data.partition_path``).
PARTITION_FILE = "part-0.parquet"
_SHOP_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}


@dataclass(frozen=True)
class Canonical:
    """One dataset's canonical tables."""

    dataset: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def ts(day: float, hour: float = 0.0) -> pd.Timestamp:
    return DAY0 + pd.Timedelta(days=day) + pd.Timedelta(hours=hour)


def spec_file(dataset: str) -> Path:
    """The shipped spec of ``dataset``."""
    return REPO_ROOT / "datasets" / f"{dataset}.yaml"


def _events(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        # Same second, same user, two items; and the same item by another user.
        (1, 10, ts(0, 10)), (1, 11, ts(0, 10)), (2, 10, ts(0, 10)),
        # Exactly on midnight: must not see its own day's (or its own) events.
        (1, 12, ts(1)), (2, 11, ts(1)), (1, 13, ts(1, 23.99)),
        # User 3 only at the start, then back after the 30-day window and its TTL.
        (3, 10, ts(0, 1)), (3, 14, ts(45, 12)),
        # User 4 back on the day the window has just emptied (the zero row, in TTL).
        (4, 12, ts(2, 5)), (4, 11, ts(33, 5)),
    ]  # fmt: skip
    for _ in range(160):
        user = int(rng.choice([1, 2, 5]))  # users 3 and 4 stay as crafted
        item = int(rng.integers(10, 16))
        when = ts(float(rng.integers(0, 50)), float(rng.integers(0, 24)))
        rows.append((user, item, when))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])
    events = events.drop_duplicates(["user_id", "item_id", "event_timestamp"])
    events = events.astype({"user_id": "int64", "item_id": "int64"}).reset_index(drop=True)
    events["event_timestamp"] = events["event_timestamp"].astype("datetime64[us, UTC]")
    return events


def crafted(dataset: str, seed: int = 5) -> Canonical:
    """The crafted history of ``dataset`` (one of ``DATASETS``) in the canonical layout."""
    rng = np.random.default_rng(seed + 1)
    events = _events(seed)
    valid = DAY0 - pd.Timedelta(days=1)
    # Users 1 and 2 change after some of their labels (user 2 exactly at an event).
    user_stamps = [valid] * 5 + [ts(0, 12), ts(1)]
    # Item 10 changes on day 20.
    item_stamps = [valid] * 6 + [ts(20)]
    if dataset == "movielens-100k":
        events["event_type"] = "interaction"
        events["weight"] = rng.integers(1, 6, len(events)).astype("float64")
        users = pd.DataFrame(
            {
                "user_id": [1, 2, 3, 4, 5, 1, 2],
                "age": [30.0, 40.0, 50.0, 60.0, 20.0, 31.0, 41.0],
                "gender": ["M", "F", "M", "F", "M", "M", "F"],
                "occupation": ["artist", "doctor", "artist", "writer", "none", "writer", "doctor"],
                "zip_code": ["10001", None, "94110", "10001", None, "02139", None],
                "event_timestamp": user_stamps,
            }
        )
        items = pd.DataFrame(
            {
                "item_id": [10, 11, 12, 13, 14, 15, 10],
                "title": [f"Item {i} (199{i})" for i in range(7)],
                "release_year": [1990.0, 1991.0, np.nan, 1993.0, 1994.0, 1995.0, 1999.0],
                "genres": [
                    "Drama",
                    "Comedy|Drama",
                    "Horror",
                    "unknown",
                    "Action|Adventure",
                    "Western",
                    "Comedy",
                ],  # fmt: skip
                "event_timestamp": item_stamps,
            }
        )
    elif dataset == "shop-synthetic":
        types = np.array(list(_SHOP_WEIGHTS))
        events["event_type"] = types[rng.integers(0, len(types), len(events))]
        events["weight"] = events["event_type"].map(_SHOP_WEIGHTS).astype("float64")
        users = pd.DataFrame(
            {
                "user_id": [1, 2, 3, 4, 5, 1, 2],
                "country": ["DE", "FR", "DE", "IT", "ES", "AT", "BE"],
                "event_timestamp": user_stamps,
            }
        )
        items = pd.DataFrame(
            {
                "item_id": [10, 11, 12, 13, 14, 15, 10],
                "name": [f"Blue widget {i}" for i in range(7)],
                "category": ["tools", "garden", "tools", "toys", "garden", "toys", "tools"],
                "brand": ["acme", None, "globex", "acme", None, "initech", "acme"],
                "price": [9.99, 24.5, 3.0, 120.0, 49.95, 7.25, 8.49],
                "event_timestamp": item_stamps,
            }
        )
    else:
        raise ValueError(dataset)
    for table in (users, items):
        table["event_timestamp"] = pd.to_datetime(table["event_timestamp"]).astype(
            "datetime64[us, UTC]"
        )
    return Canonical(dataset, events, users, items)


def settings_for(home: Path, dataset: str) -> Settings:
    """Settings on ``home`` for ``dataset`` with the SQLite online store."""
    return Settings(home=home, dataset=dataset)


def publish_canonical(settings: Settings, data: Canonical, spec: Path | None = None) -> None:
    """Write ``data`` as the import publishes it: daily partitions, tables, the spec copy.

    Days that ``data`` no longer has are removed, so a test can republish changed data.

    Args:
        settings: Where to write (``settings.dataset``'s data folder).
        data: The canonical tables.
        spec: The spec to copy; the shipped spec of ``data.dataset`` when omitted.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec or spec_file(data.dataset), settings.data_dir / "spec.yaml")
    events = data.interactions[["user_id", "item_id", "event_timestamp", "event_type", "weight"]]
    days = events["event_timestamp"].dt.strftime("%Y-%m-%d")
    wanted = set()
    for day, part in events.groupby(days, sort=True):
        path = settings.interactions_dir / f"date={day}" / PARTITION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        wanted.add(path)
        part = part.reset_index(drop=True)
        if path.is_file() and pd.read_parquet(path).equals(part):
            continue  # the import leaves unchanged days' bytes alone
        part.to_parquet(path, index=False)
    for stale in settings.interactions_dir.glob(f"date=*/{PARTITION_FILE}"):
        if stale not in wanted:
            stale.unlink()
            stale.parent.rmdir()
    data.users.to_parquet(settings.users_path, index=False)
    data.items.to_parquet(settings.items_path, index=False)


#: The end of the rolling features the crafted homes are built to (after every event).
CRAFTED_END = datetime(2024, 4, 21, tzinfo=UTC)


def applied_home(home: Path, dataset: str) -> tuple[Settings, Canonical, FeatureStore]:
    """A home with ``dataset``'s crafted data published, its rolling features computed to
    ``CRAFTED_END`` and the repo applied: what a join or a materialization needs."""
    from recops.features import RollingConfig, apply_repo, compute_rolling_features

    settings = settings_for(home, dataset)
    data = crafted(dataset)
    publish_canonical(settings, data)
    compute_rolling_features(RollingConfig(interval_end=CRAFTED_END), settings)
    return settings, data, apply_repo(settings)
