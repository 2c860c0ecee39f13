"""``build_features`` on real Feast (file offline store, SQLite online store), per spec.

The same stage runs on the MovieLens spec and on the shop spec: the sets' columns are the
layout's, strings stay strings (nulls included) from the offline join to the online store,
and numbers are float64.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _pit_data import DATASETS, crafted, publish_canonical, settings_for, ts
from recops.config import Settings
from recops.errors import DataError
from recops.features import (
    ROLLING_COUNTS,
    FeaturesConfig,
    build_features,
    online_features,
    online_user_features,
    ranking_set_columns,
)
from recops.layout import Layout, active_layout

_STRING_KINDS = {"categorical", "multi_categorical", "text"}
#: A null per dataset the crafted data holds: (table, key, id, attribute).
_NULLS = {
    "movielens-100k": ("users", "user_id", 2, "zip_code"),
    "shop-synthetic": ("items", "item_id", 11, "brand"),
}


def _cfg(settings: Settings, day: str, folder: str = "features") -> FeaturesConfig:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return FeaturesConfig(
        interval_start=start,
        interval_end=start + pd.Timedelta(days=1),
        output_dir=str(settings.runs_dir / day / folder),
    )


def _assert_published_dtypes(frame: pd.DataFrame, path: str, layout: Layout) -> None:
    schema = pq.read_schema(path)
    for feature in (*layout.user_features, *layout.item_features):
        if feature.name not in frame:
            continue
        values = frame[feature.name]
        if feature.kind in _STRING_KINDS:
            assert schema.field(feature.name).type == pa.string(), feature
            assert all(isinstance(v, str) for v in values.dropna()), feature
        else:
            assert schema.field(feature.name).type == pa.float64(), feature
            assert str(values.dtype) == "float64", feature


@pytest.mark.parametrize("dataset", DATASETS)
def test_sets_follow_the_spec_with_point_in_time_values(tmp_path: Path, dataset: str) -> None:
    settings = settings_for(tmp_path / "home", dataset)
    data = crafted(dataset)
    publish_canonical(settings, data)
    layout = active_layout(settings)
    result = build_features(_cfg(settings, "2024-04-20"), settings)

    training = pd.read_parquet(result.training_set_uri)
    assert tuple(training.columns) == layout.training_set_columns
    assert result.n_rows == len(data.interactions) == len(training)
    _assert_published_dtypes(training, result.training_set_uri, layout)
    assert str(training["weight"].dtype) == "float64"
    assert str(training["event_timestamp"].dtype) == "datetime64[us, UTC]"
    # User 1 rated two items in the same second: both rows are kept (Feast's file store
    # kept one).
    assert len(training[(training.user_id == 1) & (training.event_timestamp == ts(0, 10))]) == 2
    # User 1's profile changes at ts(0, 12): earlier rows see the old value.
    attr = layout.user_features[0].name
    old, new = data.users.loc[data.users.user_id == 1, attr].tolist()
    u1 = training[training.user_id == 1]
    assert (u1.loc[u1.event_timestamp < ts(0, 12), attr] == old).all()
    assert (u1.loc[u1.event_timestamp >= ts(0, 12), attr] == new).all()
    # A null attribute stays null (it is not a missing profile).
    table, key, entity, null_attr = _NULLS[dataset]
    assert training.loc[training[key] == entity, null_attr].isna().all()

    # The as-of snapshots: the published tables' columns, one row per entity, newest values.
    users = pd.read_parquet(result.users_uri)
    items = pd.read_parquet(result.items_uri)
    assert tuple(users.columns) == layout.user_columns
    assert tuple(items.columns) == layout.item_columns
    assert users.user_id.tolist() == [1, 2, 3, 4, 5]
    assert items.item_id.tolist() == [10, 11, 12, 13, 14, 15]
    assert users.set_index("user_id").loc[1, attr] == new
    _assert_published_dtypes(users, result.users_uri, layout)
    _assert_published_dtypes(items, result.items_uri, layout)

    # The ranking set: the same rows and profile values, plus the rolling features.
    ranking = pd.read_parquet(result.ranking_set_uri)
    assert result.ranking_service == "ranking_v1"
    assert tuple(ranking.columns) == ranking_set_columns(layout)
    shared = list(layout.training_set_columns)
    pd.testing.assert_frame_equal(ranking[shared], training[shared])
    for name in ROLLING_COUNTS:
        assert str(ranking[name].dtype) == "int64"
    assert (ranking["user_events_30d"] >= ranking["user_events_7d"]).all()
    # The first day's labels see no history at all: nothing from their own day leaks in.
    first_day = ranking.event_timestamp.dt.floor("D") == ranking.event_timestamp.min().floor("D")
    assert (ranking.loc[first_day, ["user_events_30d", "item_events_30d"]] == 0).all().all()
    assert ranking.loc[first_day, "user_weight_mean_30d"].isna().all()
    assert (ranking.loc[~first_day, "item_events_30d"] > 0).any()

    # Online: every user attribute of the spec, strings as strings.
    online = online_user_features([1, 2, 3], settings)
    names = [f.name for f in layout.user_features]
    assert [list(row) for row in online] == [["user_id", *names]] * 3
    assert online[0][attr] == new
    for feature in layout.user_features:
        values = [row[feature.name] for row in online if row[feature.name] is not None]
        kind = str if feature.kind in _STRING_KINDS else float
        assert values and all(isinstance(v, kind) for v in values), feature
    item_rows = online_features("item_id", [10, 11], "ranking_v1", settings)
    for feature in layout.item_features:
        assert feature.name in item_rows[0]
        if feature.kind in _STRING_KINDS:
            assert isinstance(item_rows[0][feature.name], str), feature
    assert item_rows[0]["item_events_30d"] > 0
    if dataset == "shop-synthetic":
        assert item_rows[1]["brand"] is None  # null in the newest profile row
        assert item_rows[0]["price"] == pytest.approx(8.49)  # item 10's newer row
    else:
        assert online[1]["zip_code"] is None


def test_a_dataset_without_attributes_builds_from_events_alone(tmp_path: Path) -> None:
    # A bare click log: no users or items file, so the tables hold keys and times only.
    spec = tmp_path / "bare.yaml"
    spec.write_text(
        "name: bare\n"
        "users: {key: u, key_type: string}\n"
        "items: {key: i, key_type: string}\n"
        "events: {user_key: u, item_key: i, timestamp: {column: t}}\n"
    )
    data = crafted("shop-synthetic")
    data = replace(
        data,
        dataset="bare",
        users=data.users[["user_id", "event_timestamp"]],
        items=data.items[["item_id", "event_timestamp"]],
    )
    settings = settings_for(tmp_path / "home", "bare")
    publish_canonical(settings, data, spec)
    result = build_features(_cfg(settings, "2024-04-20"), settings)
    training = pd.read_parquet(result.training_set_uri)
    assert tuple(training.columns) == active_layout(settings).training_set_columns
    assert len(training) == len(data.interactions)
    ranking = pd.read_parquet(result.ranking_set_uri)
    assert (ranking["item_events_30d"] > 0).any()
    assert pd.read_parquet(result.users_uri).columns.tolist() == ["user_id", "event_timestamp"]
    # Known users have an (empty) profile; an unknown one is still reported as missing.
    assert online_user_features([1], settings) == [{"user_id": 1}]
    with pytest.raises(KeyError, match="user_id 99"):
        online_user_features([99], settings)


def test_rerun_is_idempotent_and_old_interval_never_regresses_online(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "shop-synthetic")
    publish_canonical(settings, crafted("shop-synthetic"))
    first = build_features(_cfg(settings, "2024-04-20"), settings)
    again = build_features(_cfg(settings, "2024-04-20"), settings)
    assert again.training_set_sha256 == first.training_set_sha256
    assert again.ranking_set_sha256 == first.ranking_set_sha256 != ""
    assert again.fingerprint == first.fingerprint
    older = build_features(_cfg(settings, "2024-03-10"), settings)
    assert older.n_rows < first.n_rows
    # The online store keeps the newest end time; an older interval does not pull it back.
    assert older.materialized == first.materialized


def test_a_user_without_a_profile_row_trains_with_missing_attributes(tmp_path: Path) -> None:
    # A user new since the users file (or first seen by POST /v1/events) has events and
    # no profile row: every one of its rows is kept, with its attributes missing.
    settings = settings_for(tmp_path / "home", "movielens-100k")
    data = crafted("movielens-100k")
    publish_canonical(settings, replace(data, users=data.users[data.users.user_id != 3]))
    result = build_features(_cfg(settings, "2024-04-20"), settings)
    frame = pd.read_parquet(result.training_set_uri)
    layout = active_layout(settings)
    rows = frame[frame["user_id"] == 3]
    assert len(rows) == int((data.interactions["user_id"] == 3).sum()) > 0
    for feature in layout.user_features:
        assert rows[feature.name].isna().all(), feature.name
    assert frame[frame["user_id"] != 3][[f.name for f in layout.user_features]].notna().any().all()
    with pytest.raises(KeyError, match="user_id 3"):
        online_user_features([3], settings)


def test_an_item_outside_the_catalogue_is_reported(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "movielens-100k")
    data = crafted("movielens-100k")
    item = int(data.interactions["item_id"].iloc[0])
    publish_canonical(settings, replace(data, items=data.items[data.items.item_id != item]))
    with pytest.raises(DataError, match=r"(?s)training rows found no item .*items.parquet"):
        build_features(_cfg(settings, "2024-04-20"), settings)


def test_sets_built_in_slices_equal_the_one_piece_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recops.features.training_sets as training_sets

    settings = settings_for(tmp_path / "home", "movielens-100k")
    data = crafted("movielens-100k")
    # A slice whose string attribute is all null must still write a string column.
    users = data.users.assign(zip_code=np.where(data.users.user_id == 1, None, data.users.zip_code))
    publish_canonical(settings, replace(data, users=users))
    whole = build_features(_cfg(settings, "2024-04-20"), settings)
    frames = {uri: pd.read_parquet(uri) for uri in (whole.training_set_uri, whole.ranking_set_uri)}
    # The rows in slices of 20, the last one short.
    monkeypatch.setattr(training_sets, "TRAINING_SET_CHUNK_ROWS", 20)
    sliced = build_features(_cfg(settings, "2024-04-20", folder="sliced"), settings)
    assert (sliced.n_rows, sliced.n_users, sliced.n_items) == (
        whole.n_rows,
        whole.n_users,
        whole.n_items,
    )
    for before, after in (
        (whole.training_set_uri, sliced.training_set_uri),
        (whole.ranking_set_uri, sliced.ranking_set_uri),
    ):
        assert pq.ParquetFile(after).metadata.num_row_groups == -(-whole.n_rows // 20)
        assert pq.read_schema(after).equals(pq.read_schema(before), check_metadata=False)
        pd.testing.assert_frame_equal(pd.read_parquet(after), frames[before])
