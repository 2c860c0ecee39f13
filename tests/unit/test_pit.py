"""Point-in-time correctness of the ranking training set, against a pandas reference.

The dataset is crafted so that a leak would show: profiles change after some labels,
events sit exactly on midnight and share a second, and one user comes back after the
rolling snapshot's TTL has expired. Every joined value must equal
``merge_asof(direction="backward", by=key, tolerance=ttl)`` on the offline sources, and
every rolling count must equal a brute-force count of events before the label's day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recops.config import Settings
from recops.data import GENRES, publish
from recops.features import (
    RollingConfig,
    _recops_home_env,
    apply_repo,
    compute_rolling_features,
    finish_ranking_set,
    point_in_time_join,
    rolling_source_path,
)

DAY0 = pd.Timestamp("2024-03-01", tz="UTC")


def _ts(day: float, hour: float = 0.0) -> pd.Timestamp:
    return DAY0 + pd.Timedelta(days=day) + pd.Timedelta(hours=hour)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECOPS_ONLINE_STORE", "sqlite")
    return Settings.from_env()


def _crafted() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    rows = [
        # Same second, same user, two items; and the same item by another user.
        (1, 10, 5, _ts(0, 10)), (1, 11, 3, _ts(0, 10)), (2, 10, 4, _ts(0, 10)),
        # Exactly on midnight: must not see its own day's (or its own) events.
        (1, 12, 2, _ts(1)), (2, 11, 1, _ts(1)), (1, 13, 4, _ts(1, 23.99)),
        # User 3 only at the start, then back after the 30-day window and its TTL.
        (3, 10, 5, _ts(0, 1)), (3, 14, 2, _ts(45, 12)),
        # User 4 back on the day the window has just emptied (the zero row, in TTL).
        (4, 12, 3, _ts(2, 5)), (4, 11, 4, _ts(33, 5)),
    ]  # fmt: skip
    for _ in range(160):
        rows.append(
            (
                int(rng.choice([1, 2, 5])),  # users 3 and 4 stay as crafted
                int(rng.integers(10, 16)),
                int(rng.integers(1, 6)),
                _ts(float(rng.integers(0, 50)), float(rng.integers(0, 24))),
            )
        )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "event_timestamp"])
    inter = inter.drop_duplicates(["user_id", "item_id", "event_timestamp"]).reset_index(drop=True)
    valid = DAY0 - pd.Timedelta(days=1)
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5, 1, 2],
            "age": [30, 40, 50, 60, 20, 31, 41],
            "gender": ["M", "F", "M", "F", "M", "M", "F"],
            "occupation": ["artist"] * 7,
            "zip_code": ["10001"] * 7,
            # Users 1 and 2 change after some of their labels (one at exactly an event).
            "event_timestamp": [valid] * 5 + [_ts(0, 12), _ts(1)],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13, 14, 15, 10],
            "title": [f"Item {i}" for i in range(7)],
            "release_year": [1990, 1991, 1992, 1993, 1994, 1995, 1999],
            "genre_mask": [2, 4, 6, 8, 16 | 2, 1 << 18, 1 << 5],
            # Item 10's genres change on day 20: genre affinity must follow it in time.
            "event_timestamp": [valid] * 6 + [_ts(20)],
        }
    )
    return inter, users, items


def _asof(
    entity: pd.DataFrame, source: pd.DataFrame, key: str, ttl: timedelta | None
) -> pd.DataFrame:
    left = entity.reset_index().sort_values("event_timestamp")
    right = source.sort_values("event_timestamp").astype({"event_timestamp": "datetime64[ns, UTC]"})
    merged = pd.merge_asof(
        left,
        right,
        on="event_timestamp",
        by=key,
        direction="backward",
        tolerance=pd.Timedelta(ttl) if ttl else None,
        allow_exact_matches=True,
    )
    return merged.set_index("index").sort_index()


def test_ranking_join_equals_merge_asof_and_never_sees_the_future(settings: Settings) -> None:
    inter, users, items = _crafted()
    publish(settings, inter, users, items, source="test")
    end = datetime(2024, 4, 21, tzinfo=UTC)
    compute_rolling_features(RollingConfig(interval_end=end), settings)
    store = apply_repo(settings)
    entity = inter.assign(event_timestamp=inter["event_timestamp"].astype("datetime64[ns, UTC]"))
    with _recops_home_env(settings):
        joined = point_in_time_join(store, entity, "ranking_v1")
        ttls = {v.name: v.ttl for v in store.list_feature_views()}
    assert len(joined) == len(entity)

    checked = 0
    sources = {
        "user_profile": (pd.read_parquet(settings.users_path), "user_id"),
        "item_profile": (pd.read_parquet(settings.items_path), "item_id"),
        "user_activity": (
            pd.read_parquet(rolling_source_path(settings, "user_activity")),
            "user_id",
        ),
        "item_popularity": (
            pd.read_parquet(rolling_source_path(settings, "item_popularity")),
            "item_id",
        ),
    }
    for view, (source, key) in sources.items():
        ttl = ttls[view] if ttls[view] and ttls[view].total_seconds() else None
        reference = _asof(entity[[key, "event_timestamp"]], source, key, ttl)
        features = [
            c for c in source.columns if c not in (key, "event_timestamp", "title") and c in joined
        ]
        assert features, view
        for col in features:
            got, want = joined[col], reference[col]
            same = (got == want) | (got.isna() & want.isna())
            assert same.all(), (
                f"{view}.{col} differs from merge_asof at rows {list(joined.index[~same][:5])}"
            )
            checked += len(got)
    assert checked > 10 * len(entity)
    # The crafted cases really happened: an expired TTL (user 3 on day 45) reads missing,
    # and a profile changed after a label of the same user.
    u3 = joined[(joined.user_id == 3) & (joined.event_timestamp == _ts(45, 12))]
    assert len(u3) == 1 and u3["user_events_30d"].isna().all()
    u4 = joined[(joined.user_id == 4) & (joined.event_timestamp == _ts(33, 5))]
    assert len(u4) == 1 and (u4["user_events_30d"] == 0).all()
    assert set(joined.loc[joined.user_id == 1, "age"]) == {30, 31}

    # Independent of the sources: each filled count equals the events before the label's day.
    ranking = finish_ranking_set(joined)
    events = inter.assign(day=inter["event_timestamp"].dt.floor("D"))
    for row in ranking.itertuples():
        day = pd.Timestamp(row.event_timestamp).floor("D")
        for key, prefix in (("user_id", "user"), ("item_id", "item")):
            mine = events[events[key] == getattr(row, key)]
            for width in (7, 30):
                want = int(((mine.day < day) & (mine.day >= day - pd.Timedelta(days=width))).sum())
                assert getattr(row, f"{prefix}_events_{width}d") == want, (row, key, width)
        mine = events[
            (events.user_id == row.user_id)
            & (events.day < day)
            & (events.day >= day - pd.Timedelta(days=30))
        ]
        if len(mine):
            assert row.user_mean_rating_30d == pytest.approx(mine.rating.mean())
            assert 0 <= row.user_top_genre_30d < len(GENRES)
        else:
            assert np.isnan(row.user_mean_rating_30d) and row.user_top_genre_30d == -1


def test_rolling_sources_are_incremental_and_byte_identical(settings: Settings) -> None:
    inter, users, items = _crafted()
    publish(settings, inter, users, items, source="test")
    mid, end = datetime(2024, 3, 20, tzinfo=UTC), datetime(2024, 4, 21, tzinfo=UTC)
    full = compute_rolling_features(RollingConfig(interval_end=end), settings)
    again = compute_rolling_features(RollingConfig(interval_end=end), settings)
    assert again.sha256 == full.sha256 and again.recomputed_from == ""
    # An older interval never takes the sources back.
    older = compute_rolling_features(RollingConfig(interval_end=mid), settings)
    assert older.sha256 == full.sha256 and older.through == full.through

    # Built in two steps from scratch: the same bytes as in one.
    for view in full.uris:
        Path(full.uris[view]).unlink()
    first = compute_rolling_features(RollingConfig(interval_end=mid), settings)
    assert first.through == mid.isoformat()
    step = compute_rolling_features(RollingConfig(interval_end=end), settings)
    assert step.recomputed_from == mid.isoformat()
    assert step.sha256 == full.sha256

    # A changed partition recomputes from its day on, and only the affected snapshots move.
    stamps = pd.read_parquet(full.uris["user_activity"])["event_timestamp"]
    late = inter.copy()
    late.loc[late.index[-1], "rating"] = 6 - late.loc[late.index[-1], "rating"]
    publish(settings, late, users, items, source="test")
    changed = compute_rolling_features(RollingConfig(interval_end=end), settings)
    day = late.loc[late.index[-1], "event_timestamp"].floor("D")
    assert changed.recomputed_from == day.isoformat()
    assert pd.read_parquet(changed.uris["user_activity"])["event_timestamp"].equals(stamps)
