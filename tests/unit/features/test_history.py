"""``recops.features.history``: the snapshot, reads and concurrent appends on real Feast.

The store is the embedded one (file registry, SQLite online store) over the crafted shop
data of ``_pit_data``: its three event types exercise the per-type columns.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _pit_data import crafted, publish_canonical, settings_for
from recops.config import Settings
from recops.errors import DataError
from recops.features import EPOCH, RollingConfig, apply_repo, compute_rolling_features
from recops.features.history import (
    HISTORY_VIEW,
    UserHistory,
    append_events,
    history_snapshot,
    read_histories,
    seen_item_ids,
    write_history_source,
)
from recops.layout import INTERACTION_COLUMNS

DATASET = "shop-synthetic"
END = pd.Timestamp("2024-04-20", tz="UTC")


def _events(rows: list[tuple[int, int, str, str]]) -> pd.DataFrame:
    """Canonical rows from (user, item, ISO time, type)."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "event_type"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    frame["weight"] = 1.0
    return frame.astype({"user_id": "int64", "item_id": "int64"})[list(INTERACTION_COLUMNS)]


def _us(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 1000)


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A home with the crafted shop data published, the repo applied and history loaded."""
    settings = replace(
        settings_for(tmp_path_factory.mktemp("history") / "home", DATASET), history_max=5
    )
    data = crafted(DATASET)
    publish_canonical(settings, data)
    compute_rolling_features(RollingConfig(interval_end=END.to_pydatetime()), settings)
    write_history_source(settings, data.interactions)
    store = apply_repo(settings)
    store.materialize(EPOCH, END.to_pydatetime(), feature_views=[HISTORY_VIEW])
    return settings


def test_snapshot_keeps_the_last_events_most_recent_first_deduplicated(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    events = _events(
        [
            (1, 10, "2024-01-01T00:00:00", "view"),
            (1, 11, "2024-01-03T00:00:00", "purchase"),
            (1, 11, "2024-01-03T00:00:00", "purchase"),  # identical: counts once
            (1, 12, "2024-01-02T00:00:00", "view"),
            (1, 13, "2024-01-04T00:00:00", "add_to_cart"),
            (2, 10, "2024-01-05T00:00:00", "view"),
        ]
    )
    snap = history_snapshot(settings, events.sample(frac=1.0, random_state=3), history_max=3)
    assert list(snap.columns) == [
        "user_id", "event_timestamp", "history_item_ids", "history_timestamps",
        "history_event_types",
    ]  # fmt: skip
    one = snap.set_index("user_id").loc[1]
    assert list(one["history_item_ids"]) == [13, 11, 12]
    assert list(one["history_event_types"]) == ["add_to_cart", "purchase", "view"]
    assert list(one["history_timestamps"]) == [
        _us("2024-01-04"), _us("2024-01-03"), _us("2024-01-02"),
    ]  # fmt: skip
    # The row is stamped at the user's last event, so materialization orders it.
    assert one["event_timestamp"] == pd.Timestamp("2024-01-04", tz="UTC")
    assert list(snap["user_id"]) == [1, 2]
    with pytest.raises(DataError, match="history_max is 0"):
        history_snapshot(settings, events, history_max=0)
    with pytest.raises(DataError, match="event_type"):
        history_snapshot(settings, events.drop(columns="event_type"), history_max=3)


@pytest.mark.parametrize("history_max", [1, 3, 50])
def test_the_duckdb_snapshot_equals_the_pandas_reference(history_max: int) -> None:
    import pyarrow as pa
    from recops.features.history import history_table_sql

    rng = np.random.default_rng(11)
    n = 4000
    # Few distinct seconds, so ties in time (ordered by item, then type) and exact
    # duplicates are common.
    events = pd.DataFrame(
        {
            "user_id": rng.integers(1, 60, n),
            "item_id": rng.integers(1, 40, n),
            "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 30, n), unit="s"),
            "event_type": rng.choice(["view", "purchase", "add_to_cart"], n),
        }
    )
    want = pa.Table.from_pandas(
        history_snapshot(Settings(home=Path("/nonexistent")), events, history_max=history_max),
        preserve_index=False,
    ).replace_schema_metadata(None)
    got = history_table_sql(events, history_max=history_max)
    assert got.schema == want.cast(got.schema).schema
    assert got.equals(want.cast(got.schema))
    with pytest.raises(DataError, match="history_max is 0"):
        history_table_sql(events, history_max=0)


def test_seen_item_ids_filters_types_and_keeps_the_most_recent_first() -> None:
    history = UserHistory(
        item_ids=(5, 7, 5, 9),
        timestamps_us=(4, 3, 2, 1),
        event_types=("view", "purchase", "purchase", "view"),
    )
    assert seen_item_ids(history, ()) == [5, 7, 9]
    assert seen_item_ids(history, ("purchase",)) == [7, 5]
    assert seen_item_ids(UserHistory(), ("view",)) == []


def test_read_returns_the_materialized_snapshot_and_empty_for_unknown_users(
    store_settings: Settings,
) -> None:
    data = crafted(DATASET)
    expected = history_snapshot(store_settings, data.interactions, history_max=5)
    got = read_histories(store_settings, [2, 1, 999, 1])
    assert sorted(got) == [1, 2, 999]
    assert got[999] == UserHistory()
    for user in (1, 2):
        row = expected.set_index("user_id").loc[user]
        assert got[user].item_ids == tuple(row["history_item_ids"])
        assert got[user].timestamps_us == tuple(row["history_timestamps"])
        assert got[user].event_types == tuple(row["history_event_types"])
    assert read_histories(store_settings, []) == {}


def test_append_merges_dedupes_caps_and_never_goes_back(store_settings: Settings) -> None:
    before = read_histories(store_settings, [3])[3]
    late = "2024-06-01T00:00:00"
    new = _events([(3, 15, late, "purchase"), (3, 15, late, "purchase"), (77, 12, late, "view")])
    out = append_events(store_settings, new)
    assert out[3].item_ids[0] == 15 and out[3].timestamps_us[0] == _us(late)
    assert out[3].item_ids.count(15) <= before.item_ids.count(15) + 1
    assert len(out[3]) <= store_settings.history_max
    # A user with no row gets one from the push alone.
    assert (
        read_histories(store_settings, [77])[77]
        == out[77]
        == UserHistory((12,), (_us(late),), ("view",))
    )
    # An event older than the row's newest still lands (in its place), not dropped.
    older = _events([(3, 14, "2024-05-01T00:00:00", "view")])
    after = append_events(store_settings, older)[3]
    assert read_histories(store_settings, [3])[3] == after
    assert after.item_ids[:2] == (15, 14)
    # The cap keeps the newest: five events later than everything stored push all out.
    fresh = _events([(3, 20 + i, f"2024-07-0{i + 1}T00:00:00", "view") for i in range(5)])
    capped = append_events(store_settings, fresh)[3]
    assert capped.item_ids == (24, 23, 22, 21, 20)
    assert read_histories(store_settings, [3])[3] == capped


def test_two_threads_appending_for_one_user_lose_nothing(store_settings: Settings) -> None:
    settings = replace(store_settings, history_max=100)
    errors: list[BaseException] = []

    def writer(base: int) -> None:
        try:
            for i in range(8):
                stamp = f"2024-08-01T00:{base // 100:02d}:{i:02d}"
                append_events(settings, _events([(4, base + i, stamp, "view")]))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    items = set(read_histories(settings, [4])[4].item_ids)
    assert {*range(100, 108), *range(200, 208)} <= items
