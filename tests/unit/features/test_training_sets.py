"""Point-in-time joins (``recops.features.training_sets``), against a pandas reference.

The dataset is crafted so that a leak would show: profiles change after some labels,
events sit exactly on midnight and share a second, and one user comes back after the
rolling snapshot's TTL has expired. Every joined value must equal
``merge_asof(direction="backward", by=key, tolerance=ttl)`` on the offline sources, and
every rolling count must equal a brute-force count of events before the label's day.
Both shipped specs run: their attributes (strings with nulls, floats with NaN) are
whatever the spec declares.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _pit_data import DATASETS, crafted, publish_canonical, settings_for, ts
from recops.features import (
    RollingConfig,
    apply_repo,
    compute_rolling_features,
    finish_ranking_set,
    point_in_time_join,
    ranking_set_columns,
    recops_home_env,
    rolling_source_path,
)
from recops.features.training_sets import missing_profiles
from recops.layout import active_layout


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


@pytest.mark.parametrize("dataset", DATASETS)
def test_ranking_join_equals_merge_asof_and_never_sees_the_future(
    tmp_path: Path, dataset: str
) -> None:
    settings = settings_for(tmp_path / "home", dataset)
    data = crafted(dataset)
    inter = data.interactions
    publish_canonical(settings, data)
    layout = active_layout(settings)
    end = datetime(2024, 4, 21, tzinfo=UTC)
    compute_rolling_features(RollingConfig(interval_end=end), settings)
    store = apply_repo(settings)
    entity = inter.assign(event_timestamp=inter["event_timestamp"].astype("datetime64[ns, UTC]"))
    with recops_home_env(settings):
        joined = point_in_time_join(store, entity, "ranking_v1")
        ttls = {v.name: v.ttl for v in store.list_feature_views()}
    assert len(joined) == len(entity)
    assert store.project == settings.feast_project

    checked = 0
    sources = {
        "user_profile": (data.users, "user_id"),
        "item_profile": (data.items, "item_id"),
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
        view_ttl = ttls[view]
        ttl = view_ttl if view_ttl and view_ttl.total_seconds() else None
        reference = _asof(entity[[key, "event_timestamp"]], source, key, ttl)
        features = [c for c in source.columns if c not in (key, "event_timestamp")]
        assert features and set(features) <= set(joined.columns), view
        for col in features:
            got, want = joined[col], reference[col]
            same = (got == want) | (got.isna() & want.isna())
            assert same.all(), (
                f"{view}.{col} differs from merge_asof at rows {list(joined.index[~same][:5])}"
            )
            checked += len(got)
    assert checked > 8 * len(entity)
    # The crafted cases really happened: an expired TTL (user 3 on day 45) reads missing,
    # and a profile changed after a label of the same user.
    u3 = joined[(joined.user_id == 3) & (joined.event_timestamp == ts(45, 12))]
    assert len(u3) == 1 and u3["user_events_30d"].isna().all()
    u4 = joined[(joined.user_id == 4) & (joined.event_timestamp == ts(33, 5))]
    assert len(u4) == 1 and (u4["user_events_30d"] == 0).all()
    first_attr = layout.user_features[0].name
    assert joined.loc[joined.user_id == 1, first_attr].nunique() == 2

    # Independent of the sources: each filled count equals the events before the label's day,
    # and the mean weight is the mean of those events' weights.
    ranking = finish_ranking_set(joined, layout)
    assert tuple(ranking.columns) == ranking_set_columns(layout)
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
            assert row.user_weight_mean_30d == pytest.approx(mine.weight.mean())
        else:
            assert np.isnan(row.user_weight_mean_30d)


def test_missing_profiles_are_unknown_keys_or_rows_before_the_first_profile() -> None:
    entity = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 9],
            "item_id": [10, 10, 10, 10],
            "event_timestamp": [ts(0), ts(2), ts(2), ts(2)],
        }
    )
    # A profile row may hold null attributes: only the valid-from time decides.
    valid_from = {
        "user_id": pd.Series({1: ts(1), 2: ts(0)}),
        "item_id": pd.Series({10: ts(0)}),
    }
    assert missing_profiles(entity, valid_from).tolist() == [True, False, False, True]
    # Exactly at the valid-from time, the profile is valid (as in the join).
    assert not missing_profiles(entity.iloc[[1]].assign(event_timestamp=ts(1)), valid_from).any()


def test_every_entity_row_comes_back_in_order_duplicates_and_misses_included(
    tmp_path: Path,
) -> None:
    """No entity row is lost: exact duplicates, shared (key, time) pairs, rows with no
    value inside the TTL and unknown keys all come back, in the entity order."""
    settings = settings_for(tmp_path / "home", DATASETS[0])
    data = crafted(DATASETS[0])
    publish_canonical(settings, data)
    compute_rolling_features(
        RollingConfig(interval_end=datetime(2024, 4, 21, tzinfo=UTC)), settings
    )
    store = apply_repo(settings)
    inter = data.interactions[["user_id", "item_id", "event_timestamp"]]
    first = inter.iloc[0]
    extra = pd.DataFrame(
        {
            # The same user twice in one second on two items, the exact same row twice,
            # a time before any rolling snapshot (nothing inside the TTL) and a user no
            # source knows.
            "user_id": [first.user_id, first.user_id, first.user_id, first.user_id, 999_999],
            "item_id": [first.item_id, first.item_id + 1, first.item_id, first.item_id, 10],
            "event_timestamp": [ts(0, 10), ts(0, 10), ts(0, 10), ts(-20), ts(3)],
        }
    )
    # Shuffled, so an order-restoring bug shows.
    entity = (
        pd.concat([inter, extra, inter.iloc[:7]], ignore_index=True)
        .sample(frac=1.0, random_state=3)
        .astype({"event_timestamp": "datetime64[ns, UTC]"})
    )
    with recops_home_env(settings):
        joined = point_in_time_join(store, entity, "ranking_v1")
        single = {
            i: point_in_time_join(store, entity.loc[[i]], "ranking_v1")
            for i in entity.index[:: max(1, len(entity) // 6)]
        }
    assert len(joined) == len(entity)
    assert joined.index.tolist() == entity.index.tolist()
    for col in ("user_id", "item_id", "event_timestamp"):
        assert joined[col].tolist() == entity[col].tolist(), col
    # Each row's values are what that row alone would get: duplicates do not collapse.
    for i, alone in single.items():
        got, want = joined.loc[[i]], alone
        for col in ("user_events_30d", "item_events_30d"):
            a, b = got[col].iloc[0], want[col].iloc[0]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (i, col)
    unknown = joined[joined.user_id == 999_999]
    assert len(unknown) == 1 and unknown["user_events_30d"].isna().all()
    assert len(joined[(joined.user_id == first.user_id) & (joined.event_timestamp == ts(-20))]) == 1
