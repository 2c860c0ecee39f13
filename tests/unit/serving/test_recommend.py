"""Unit tests for ``recops.serving.recommend``: keys, the seen policy and the cold start.

A string-keyed shop dataset is published under a temporary home (spec, interned keys,
one interactions partition, the items table). The model path needs a server and the
online store and is covered by the integration tests; here the user is unknown, so the
cold-start path runs for real and no server is contacted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data.keys import intern
from recops.errors import ParamError, RecommendError
from recops.serving.recommend import (
    RecommendConfig,
    _events,
    _user_ref,
    choose_policy,
    fuse,
    popular_items,
    recommend,
    seen_items,
)

SPEC = """\
name: shopt
users: {key: customer, key_type: string}
items:
  key: sku
  key_type: string
  attributes:
    - {name: name, column: name, kind: text}
    - {name: price, column: price, kind: numeric}
events:
  user_key: customer
  item_key: sku
  timestamp: {column: ts, format: iso8601}
  event_type:
    column: event
    weights: {view: 1, purchase: 5}
    positives: [purchase]
seen: [view, purchase]
"""

#: (customer, sku, event): SKU-2 is bought twice, SKU-3 once, SKU-4 only viewed (3 times).
EVENTS = [
    ("c-1", "SKU-1", "view"),
    ("c-1", "SKU-2", "purchase"),
    ("c-2", "SKU-2", "purchase"),
    ("c-2", "SKU-3", "purchase"),
    ("c-2", "SKU-4", "view"),
    ("c-2", "SKU-4", "view"),
    ("c-2", "SKU-4", "view"),
]


@pytest.fixture
def shop(tmp_path: Path) -> Settings:
    """A published shop dataset; an external model server is declared but never called."""
    settings = dataclasses.replace(
        Settings(home=tmp_path), dataset="shopt", tfserving_rest="127.0.0.1:9"
    )
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "spec.yaml").write_text(SPEC)
    frame = pd.DataFrame(EVENTS, columns=["customer", "sku", "event"])
    users = intern(settings, "users", frame["customer"])
    items = intern(settings, "items", pd.Series([f"SKU-{i}" for i in range(1, 6)]))
    item_of = dict(zip([f"SKU-{i}" for i in range(1, 6)], items, strict=True))
    day = settings.interactions_dir / "date=2024-01-01"
    day.mkdir(parents=True)
    pd.DataFrame(
        {
            "user_id": users,
            "item_id": frame["sku"].map(item_of).astype("int64"),
            "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
            "event_type": frame["event"],
            "weight": frame["event"].map({"view": 1.0, "purchase": 5.0}),
        }
    ).to_parquet(day / "part-0.parquet")
    pd.DataFrame(
        {
            "item_id": items,
            "name": ["Mug", "Lamp", "Desk", "Pen", None],
            "price": [4.0, 30.0, 120.0, 1.5, float("nan")],
            "event_timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
        }
    ).to_parquet(settings.items_path)
    return settings


def test_an_unknown_user_gets_popular_items_with_the_datasets_keys(shop: Settings) -> None:
    recs = recommend(RecommendConfig(user_id="c-999", k=4), shop)
    assert [r["item_id"] for r in recs] == ["SKU-2", "SKU-3", "SKU-4", "SKU-1"]
    assert [r["score"] for r in recs] == [2.0, 1.0, 0.0, 0.0]
    assert {r["source"] for r in recs} == {"popularity"}
    assert recs[0] == {
        "name": "Lamp",
        "price": 30.0,
        "rank": 1,
        "item_id": "SKU-2",
        "score": 2.0,
        "source": "popularity",
    }
    # SKU-5 has no events: it is not popular at all, and k caps the list.
    assert len(recommend(RecommendConfig(user_id="c-999", k=10), shop)) == 4


def test_seen_items_follow_the_seen_types(shop: Settings) -> None:
    events = _events(shop)
    c1 = _user_ref(shop, "c-1")
    assert c1 is not None and _user_ref(shop, "c-999") is None
    assert seen_items(events, c1, ("view", "purchase")) == {1, 2}
    assert seen_items(events, c1, ("purchase",)) == {2}
    # Positives only: SKU-4's views do not make it popular ahead of a purchase.
    assert popular_items(events, ("purchase",)).index.tolist() == [2, 3, 4, 1]
    assert popular_items(events, ()).index.tolist() == [4, 2, 1, 3]


def test_integer_keys_parse_from_text(shop: Settings) -> None:
    integer = dataclasses.replace(shop, dataset="ints")
    integer.data_dir.mkdir(parents=True)
    (integer.data_dir / "spec.yaml").write_text(
        SPEC.replace("name: shopt", "name: ints").replace("key_type: string", "key_type: integer")
    )
    assert _user_ref(integer, "196") == 196
    assert _user_ref(integer, 7) == 7
    assert _user_ref(integer, "c-1") is None


def test_missing_state_is_a_hint_not_a_crash(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(RecommendError, match="no published data") as info:
        recommend(RecommendConfig(user_id=1), settings)
    assert "recops data import --spec" in info.value.hint
    with pytest.raises(ParamError, match="protocol"):
        RecommendConfig(user_id=1, protocol="http")
    with pytest.raises(ParamError, match="k=0"):
        RecommendConfig(user_id=1, k=0)


def test_fusion_rewards_items_both_orders_like() -> None:
    # Retrieval order 1, 2, 3; the ranker prefers 2, then 3, then 1.
    assert fuse([1, 2, 3], {1: 0.1, 2: 0.9, 3: 0.5}) == [2, 1, 3]


def test_the_ranker_reorders_only_a_list_no_worse_on_any_figure() -> None:
    retrieval = {"recall_at_10": 0.2684, "ndcg_at_10": 0.3080}
    # ml-100k's random cut: NDCG up, Recall down: users keep the retrieval order.
    assert choose_policy(retrieval, {"recall_at_10": 0.2620, "ndcg_at_10": 0.3106}) == "retrieval"
    assert choose_policy(retrieval, {"recall_at_10": 0.27, "ndcg_at_10": 0.31}) == "fusion"
    assert choose_policy(retrieval, dict(retrieval)) == "fusion"  # a tie re-orders
    assert choose_policy(retrieval, {"recall_at_10": 0.30, "ndcg_at_10": 0.30}) == "retrieval"
