"""Splits: RecBole's per-user random 80/10/10, the temporal split, and reading them back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recops.errors import DataError, ParamError
from recops.splits import (
    positive_rows,
    preceding_histories,
    read_split,
    split_counts,
    split_interactions,
    temporal_split,
    train_rows,
)


def test_split_is_recbole_80_10_10_per_user() -> None:
    users = np.repeat([1, 2, 3], [30, 20, 5])
    items = np.arange(users.size)
    split = split_interactions(users, items, seed=2020)

    counts = split.groupby(["user_id", "split"]).size().unstack(fill_value=0)
    assert counts.loc[1, ["train", "valid", "test"]].tolist() == [24, 3, 3]
    assert counts.loc[2, ["train", "valid", "test"]].tolist() == [16, 2, 2]
    # RecBole gives a 0.5-row share one row while train keeps more than one.
    assert counts.loc[3, ["train", "valid", "test"]].tolist() == [3, 1, 1]
    assert split["item_id"].tolist() == items.tolist()
    again = split_interactions(users, items, seed=2020)
    assert again["split"].tolist() == split["split"].tolist()
    other = split_interactions(users, items, seed=7)
    assert other["split"].tolist() != split["split"].tolist()


def test_split_counts_follow_recbole() -> None:
    assert split_counts(30) == [24, 3, 3]
    assert split_counts(5) == [3, 1, 1]
    # Two rows: train keeps one, so only the last part gets the other.
    assert split_counts(2) == [1, 0, 1]
    assert split_counts(1) == [1, 0, 0]


def test_temporal_split_orders_each_user_by_time() -> None:
    rng = np.random.default_rng(0)
    times = rng.permutation(10)
    users = np.array([1] * 10 + [2] * 5 + [3] * 2)
    stamps = np.concatenate([times, [50, 10, 40, 20, 30], [7, 7]])
    items = np.arange(users.size) + 100
    split = temporal_split(users, items, stamps)

    assert list(split.columns) == ["user_id", "item_id", "split"]
    reference = split_interactions(users, items)
    assert split.dtypes.to_dict() == reference.dtypes.to_dict()
    assert split["item_id"].tolist() == items.tolist()
    labels = dict(zip(items.tolist(), split["split"].tolist(), strict=True))
    # User 1: times 0..7 train, 8 valid, 9 test.
    for item, t in zip(items[:10].tolist(), times.tolist(), strict=True):
        assert labels[item] == ("train" if t < 8 else "valid" if t == 8 else "test")
    # User 2 (5 rows): RecBole gives valid and test one row each, train the oldest 3.
    assert [labels[i] for i in items[10:15].tolist()] == [
        "test",
        "train",
        "valid",
        "train",
        "train",
    ]
    # User 3 (2 rows, same time): 1 train, 0 valid, 1 test; ties keep the input order.
    assert [labels[i] for i in items[15:].tolist()] == ["train", "test"]
    # Same per-user counts as the random protocol.
    assert (
        split.groupby(["user_id", "split"]).size().to_dict()
        == reference.groupby(["user_id", "split"]).size().to_dict()
    )


def test_temporal_split_accepts_datetimes_and_rejects_bad_input() -> None:
    stamps = pd.to_datetime([3, 1, 2], unit="D", utc=True).to_numpy()
    split = temporal_split(np.array([1, 1, 1]), np.array([1, 2, 3]), stamps)
    assert split["split"].tolist() == ["test", "train", "valid"]
    with pytest.raises(ValueError, match="differ in length"):
        temporal_split(np.array([1, 1]), np.array([1]), np.array([1, 2]))
    with pytest.raises(ValueError, match="ratios"):
        temporal_split(np.array([1]), np.array([1]), np.array([1]), ratios=(0.5, 0.1, 0.1))


def test_read_split_checks_values(tmp_path: Path) -> None:
    good = pd.DataFrame({"user_id": [1, 1], "item_id": [2, 3], "split": ["train", "test"]})
    good.to_parquet(tmp_path / "good.parquet")
    assert read_split(str(tmp_path / "good.parquet")).equals(good)
    good.assign(split=["train", "holdout"]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet.*'holdout'"):
        read_split(str(tmp_path / "bad.parquet"))
    with pytest.raises(FileNotFoundError, match="missing"):
        read_split(str(tmp_path / "missing.parquet"))


def test_train_rows_joins_and_checks_the_split() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "age": [30, 30, 40]})
    split = pd.DataFrame(
        {"user_id": [1, 1, 2], "item_id": [10, 11, 10], "split": ["train", "test", "train"]}
    )
    rows = train_rows(frame, split)
    assert rows.to_dict("list") == {"user_id": [1, 2], "item_id": [10, 10], "age": [30, 40]}
    with pytest.raises(DataError, match="lacks 1"):
        train_rows(frame, split.iloc[:2])
    with pytest.raises(DataError, match="duplicate"):
        train_rows(frame, pd.concat([split, split.iloc[:1]]))


def test_typed_split_keeps_event_types_and_of_types_filters_by_them(tmp_path: Path) -> None:
    from recops.splits import of_types, read_typed_split

    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 11, 10],
            "split": ["train", "test", "test"],
            "event_type": ["view", "purchase", "view"],
        }
    )
    frame.to_parquet(tmp_path / "typed.parquet", index=False)
    frame.drop(columns="event_type").to_parquet(tmp_path / "plain.parquet", index=False)

    typed = read_typed_split(str(tmp_path / "typed.parquet"))
    plain = read_typed_split(str(tmp_path / "plain.parquet"))

    assert typed["event_type"].tolist() == ["view", "purchase", "view"]
    assert "event_type" not in plain.columns
    assert of_types(typed, ("purchase",))["item_id"].tolist() == [11]
    # No types asked, or a split without them (every rating of MovieLens): every row.
    assert len(of_types(typed, ())) == 3 and len(of_types(plain, ("purchase",))) == 3


def test_preceding_histories_hold_the_users_earlier_items_newest_first() -> None:
    rng = np.random.default_rng(3)
    n = 400
    users = rng.integers(0, 12, n)
    items = rng.permutation(n) + 100
    # Coarse times: many rows share one, and those must stay out of each other's history.
    times = rng.integers(0, 40, n)
    eligible = rng.random(n) < 0.7
    got = preceding_histories(users, items, times, length=5, eligible=eligible)
    assert got.shape == (n, 5)
    for row in range(n):
        earlier = [
            j for j in range(n) if users[j] == users[row] and times[j] < times[row] and eligible[j]
        ]
        # Newest first; among equal times the higher item id is the later row.
        earlier.sort(key=lambda j: (times[j], items[j]), reverse=True)
        want = [int(items[j]) for j in earlier[:5]]
        assert got[row].tolist() == want + [-1] * (5 - len(want)), row
    assert (preceding_histories(users, items, times, length=0) == 0).all()
    assert preceding_histories(users[:0], items[:0], times[:0], length=3).shape == (0, 3)


def test_other_item_histories_hold_the_users_newest_other_items() -> None:
    rng = np.random.default_rng(4)
    n = 300
    users = rng.integers(0, 9, n)
    items = rng.permutation(n) + 100
    times = rng.integers(0, 50, n)
    eligible = rng.random(n) < 0.7
    got = preceding_histories(users, items, times, length=4, eligible=eligible, before_only=False)
    for row in range(n):
        others = [j for j in range(n) if users[j] == users[row] and j != row and eligible[j]]
        others.sort(key=lambda j: (times[j], items[j]), reverse=True)
        want = [int(items[j]) for j in others[:4]]
        assert got[row].tolist() == want + [-1] * (4 - len(want)), row


def test_the_random_split_takes_the_specs_shares() -> None:
    users = np.repeat(np.arange(3), 20)
    items = np.arange(users.size)
    split = split_interactions(users, items, seed=1, ratios=(0.6, 0.2, 0.2))
    counts = split.groupby("user_id")["split"].value_counts().unstack()
    assert (counts["train"] == 12).all() and (counts["valid"] == 4).all()
    assert (counts["test"] == 4).all()
    with pytest.raises(ParamError, match="ratios"):
        split_interactions(users, items, ratios=(0.6, 0.2, 0.3))


def test_positive_rows_leave_out_the_negative_event_types() -> None:
    rows = pd.DataFrame({"user_id": [1, 1, 2], "event_type": ["play", "skip", "play"]})
    keep = positive_rows(rows, ("skip",))
    assert keep is not None and keep.tolist() == [True, False, True]
    # No negative type declared, none present, or no event types at all: every row.
    assert positive_rows(rows, ()) is None
    assert positive_rows(rows, ("pause",)) is None
    assert positive_rows(rows.drop(columns="event_type"), ("skip",)) is None
    with pytest.raises(DataError, match="every training row is a negative event"):
        positive_rows(rows, ("skip", "play"))
