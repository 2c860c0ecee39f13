"""``build_features`` on real Feast (file offline store, SQLite online store)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import publish, synthesize
from recops.features import FeaturesConfig, build_features, online_user_features


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    return Settings.from_env()


RANKING_COLUMNS = [
    "user_id", "item_id", "rating", "event_timestamp", "age", "gender", "occupation",
    "zip_code", "release_year", "genre_mask", "user_events_7d", "user_events_30d",
    "user_mean_rating_30d", "user_top_genre_30d", "user_top_genre_share_30d",
    "item_events_7d", "item_events_30d", "item_mean_rating_30d",
]  # fmt: skip


def _cfg(settings: Settings, day: str) -> FeaturesConfig:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return FeaturesConfig(
        interval_start=start,
        interval_end=start + pd.Timedelta(days=1),
        output_dir=str(settings.runs_dir / day / "features"),
    )


def test_point_in_time_values_and_no_lost_rows(settings: Settings) -> None:
    inter, users, items = synthesize(rows=600, users=20, items=30, days=3, seed=2)
    # The same user rating two items in the same second: Feast's file store would keep one.
    t = inter["event_timestamp"].iloc[0]
    dupes = pd.DataFrame(
        {"user_id": [1, 1], "item_id": [1, 2], "rating": [5, 4], "event_timestamp": [t, t]}
    )
    inter = pd.concat([inter, dupes]).drop_duplicates(["user_id", "item_id", "event_timestamp"])
    # User 1's profile changes mid-way: rows before the change must see the old age.
    change = inter["event_timestamp"].min() + pd.Timedelta(days=1)
    newer = users[users.user_id == 1].assign(age=77, event_timestamp=change)
    users = pd.concat([users, newer], ignore_index=True)
    publish(settings, inter, users, items, source="test")
    last_day = inter["event_timestamp"].max().strftime("%Y-%m-%d")

    result = build_features(_cfg(settings, last_day), settings)
    training = pd.read_parquet(result.training_set_uri)
    assert result.n_rows == len(inter) == len(training)
    u1 = training[training.user_id == 1]
    old_age = int(users.loc[users.user_id == 1, "age"].iloc[0])
    assert (u1.loc[u1.event_timestamp < change, "age"] == old_age).all()
    assert (u1.loc[u1.event_timestamp >= change, "age"] == 77).all()
    assert len(training.merge(dupes[["user_id", "item_id", "event_timestamp"]])) == 2
    snapshot = pd.read_parquet(result.users_uri).set_index("user_id")
    assert snapshot.loc[1, "age"] == 77  # as of the interval end
    assert online_user_features([1], settings)[0]["age"] == 77

    # The ranking set: the same rows, the same profile values, plus the rolling features.
    ranking = pd.read_parquet(result.ranking_set_uri)
    assert result.ranking_service == "ranking_v1"
    assert list(ranking.columns) == RANKING_COLUMNS
    assert str(ranking.event_timestamp.dtype) == "datetime64[us, UTC]"
    objects = ranking.drop(columns=["event_timestamp", "zip_code"]).select_dtypes("object")
    assert objects.columns.tolist() == ["gender", "occupation"]
    shared = ["user_id", "item_id", "rating", "age", "release_year", "genre_mask"]
    assert ranking[shared].equals(training[shared])
    assert (ranking["user_events_30d"] >= ranking["user_events_7d"]).all()
    # The first day's labels see no history at all: nothing from their own day leaks in.
    first_day = ranking.event_timestamp.dt.floor("D") == ranking.event_timestamp.min().floor("D")
    assert (ranking.loc[first_day, ["user_events_30d", "item_events_30d"]] == 0).all().all()
    assert (ranking.loc[~first_day, "item_events_30d"] > 0).any()


def test_rerun_is_idempotent_and_old_interval_never_regresses_online(settings: Settings) -> None:
    publish(settings, *synthesize(rows=600, users=20, items=30, days=3, seed=2), source="test")
    days = sorted(p.name.removeprefix("date=") for p in settings.interactions_dir.iterdir())
    first = build_features(_cfg(settings, days[-1]), settings)
    again = build_features(_cfg(settings, days[-1]), settings)
    assert again.training_set_sha256 == first.training_set_sha256
    assert again.ranking_set_sha256 == first.ranking_set_sha256 != ""
    assert again.fingerprint == first.fingerprint
    older = build_features(_cfg(settings, days[0]), settings)
    assert older.n_rows < first.n_rows
    # The online store keeps the newest end time; an older interval does not pull it back.
    assert older.materialized == first.materialized


def test_unknown_user_is_reported(settings: Settings) -> None:
    inter, users, items = synthesize(rows=300, users=20, items=30, days=2, seed=2)
    publish(settings, inter, users[users.user_id != 3], items, source="test")
    last_day = inter["event_timestamp"].max().strftime("%Y-%m-%d")
    if not (inter.user_id == 3).any():
        pytest.skip("seed produced no events for user 3")
    with pytest.raises(ValueError, match="found no profile"):
        build_features(_cfg(settings, last_day), settings)
    with pytest.raises(KeyError, match="user_id 3"):
        online_user_features([3], settings)


def test_sets_built_in_slices_equal_the_one_piece_sets(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq
    import recops.features.training_sets as training_sets

    inter, users, items = synthesize(rows=600, users=20, items=30, days=3, seed=2)
    publish(settings, inter, users, items, source="test")
    last_day = inter["event_timestamp"].max().strftime("%Y-%m-%d")
    whole = build_features(_cfg(settings, last_day), settings)
    frames = {uri: pd.read_parquet(uri) for uri in (whole.training_set_uri, whole.ranking_set_uri)}
    # 600 rows in slices of 70: nine slices, the last one short.
    monkeypatch.setattr(training_sets, "TRAINING_SET_CHUNK_ROWS", 70)
    sliced = build_features(
        replace(_cfg(settings, last_day), output_dir=str(settings.runs_dir / "sliced")), settings
    )
    assert (sliced.n_rows, sliced.n_users, sliced.n_items) == (
        whole.n_rows,
        whole.n_users,
        whole.n_items,
    )
    for before, after in (
        (whole.training_set_uri, sliced.training_set_uri),
        (whole.ranking_set_uri, sliced.ranking_set_uri),
    ):
        assert pq.ParquetFile(after).metadata.num_row_groups == -(-whole.n_rows // 70)
        assert pq.read_schema(after).equals(pq.read_schema(before), check_metadata=False)
        pd.testing.assert_frame_equal(pd.read_parquet(after), frames[before])
