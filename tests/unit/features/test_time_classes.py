"""Joins asked once per (key, time class) (``recops.features.time_classes``).

The reference is Feast itself: one plain ``get_historical_features`` call on every row.
The rows sit on, just before and just after every change point of every key (a snapshot
appearing, a TTL running out, a profile changing), and at times before any feature row,
so a class boundary one microsecond off shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _pit_data import DATASETS, applied_home, ts
from recops.features import recops_home_env
from recops.features.time_classes import change_points, join_by_time_class, join_sides

_US = pd.Timedelta(microseconds=1)


def _rows_around_points(sides: list, keys: dict[str, list[int]]) -> pd.DataFrame:
    """For every key and change point: the point, one µs either side, and noon after it."""
    times: list[pd.Timestamp] = [ts(-40), ts(-1, 23)]
    for side in sides:
        for point in side.points:
            at = pd.Timestamp(int(point), unit="us", tz="UTC")
            times += [at - _US, at, at + _US, at.floor("D") + pd.Timedelta(hours=12)]
    times = sorted(set(times))
    rng = np.random.default_rng(0)
    users = np.array(keys["user_id"] + [999])
    items = np.array(keys["item_id"] + [888])
    rows = [(int(u), int(rng.choice(items)), t) for t in times for u in users] + [
        (int(rng.choice(users)), int(i), t) for t in times for i in items
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])
    return frame.astype({"event_timestamp": "datetime64[ns, UTC]"})


@pytest.mark.parametrize("dataset", DATASETS)
def test_answers_equal_one_plain_call_on_every_row(tmp_path: Path, dataset: str) -> None:
    settings, data, store = applied_home(tmp_path / "home", dataset)
    with recops_home_env(settings):
        sides = join_sides(store, "ranking_v1")
        assert sides is not None
        assert [s.keys for s in sides] == [("user_id",), ("item_id",)]
        assert all(s.points is not None and len(s.points) for s in sides)
        entity = _rows_around_points(
            sides,
            {
                "user_id": sorted(data.users.user_id.unique().tolist()),
                "item_id": sorted(data.items.item_id.unique().tolist()),
            },
        )
        entity = entity.sample(frac=1.0, random_state=1).reset_index(drop=True)
        entity.index = entity.index + 100  # a non-default index is kept
        got = join_by_time_class(store, entity, sides)
        service = store.get_feature_service("ranking_v1")
        plain = (
            store.get_historical_features(
                entity_df=entity.assign(row=np.arange(len(entity))), features=service
            )
            .to_df()
            .sort_values("row")
            .reset_index(drop=True)
        )
    assert len(got) == len(entity) > 1000
    assert got.index.tolist() == entity.index.tolist()
    assert (
        got[["user_id", "item_id"]].to_numpy().tolist()
        == entity[["user_id", "item_id"]].to_numpy().tolist()
    )
    refs = [r.split(":", 1)[1] for side in sides for r in side.refs]
    assert set(refs) <= set(plain.columns)
    for col in refs:
        a, b = got[col].reset_index(drop=True), plain[col]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), f"{col} differs at rows {list(np.flatnonzero(~same)[:5])}"
    # The cases that matter happened: values, nulls from an expired TTL, unknown keys.
    assert got["user_events_30d"].notna().any() and got["user_events_30d"].isna().any()
    assert got.loc[got.user_id == 999, "user_events_30d"].isna().all()


def test_change_points_are_stamps_and_expiries(tmp_path: Path) -> None:
    settings, data, store = applied_home(tmp_path / "home", DATASETS[0])
    with recops_home_env(settings):
        activity = store.get_feature_view("user_activity")
        profile = store.get_feature_view("user_profile")
        points = change_points(activity)
        profile_points = change_points(profile)
    assert points is not None and profile_points is not None
    stamps = pd.read_parquet(activity.batch_source.path)["event_timestamp"]
    stamps_us = set(stamps.astype("datetime64[us, UTC]").astype("int64").tolist())
    ttl_us = int(activity.ttl.total_seconds() * 1e6)
    assert set(points.tolist()) == stamps_us | {s + ttl_us + 1 for s in stamps_us}
    # A profile never expires: its points are its valid-from times only.
    profile_us = data.users["event_timestamp"].astype("datetime64[us, UTC]").astype("int64")
    assert set(profile_points.tolist()) == set(profile_us.tolist())
