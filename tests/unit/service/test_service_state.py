"""``recops.service.state``: the served state loads once and reloads when a source changes.

The cache runs on a published shop dataset with no online store and an external model
server that does not answer, so no model serves: the state loads the items, keys and
popularity, and reloads only when a source file changes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data.keys import intern
from recops.service.state import StateCache
from recops.serving.client import ServingClient

SPEC = """\
name: shopu
users: {key: customer, key_type: string}
items:
  key: sku
  key_type: string
  attributes:
    - {name: name, column: name, kind: text}
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


@pytest.fixture
def shop(tmp_path: Path) -> Settings:
    settings = dataclasses.replace(
        Settings(home=tmp_path), dataset="shopu", tfserving_rest="127.0.0.1:9"
    )
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "spec.yaml").write_text(SPEC)
    users = intern(settings, "users", pd.Series(["c-1", "c-1", "c-2"]))
    items = intern(settings, "items", pd.Series(["SKU-1", "SKU-2", "SKU-3"]))
    day = settings.interactions_dir / "date=2024-01-01"
    day.mkdir(parents=True)
    pd.DataFrame(
        {
            "user_id": users,
            "item_id": [items[0], items[1], items[1]],
            "event_timestamp": pd.to_datetime(
                ["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00"], utc=True
            ),
            "event_type": ["view", "purchase", "purchase"],
            "weight": [1.0, 5.0, 5.0],
        }
    ).to_parquet(day / "part-0.parquet")
    pd.DataFrame(
        {"item_id": items, "name": ["Mug", "Lamp", None], "event_timestamp": pd.Timestamp(0)}
    ).to_parquet(settings.items_path)
    return settings


def test_state_loads_once_and_reloads_when_a_source_changes(shop: Settings) -> None:
    with ServingClient("127.0.0.1", 9, 9, timeout_s=0.5) as client:
        cache = StateCache(shop, client)
        assert cache.refresh() and cache.loaded
        state = cache.current()
        assert state.versions == {"retrieval": None, "ranking": None}
        assert state.item_keys == {1: "SKU-1", 2: "SKU-2", 3: "SKU-3"}
        assert state.items[3] == {"name": None}
        assert state.popular[0] == 2 and state.popularity[2] == 2.0
        # c-1 saw SKU-2 last: most recent first.
        assert state.published_seen[cache.user_id("c-1") or 0] == [2, 1]
        assert cache.user_id("c-404") is None
        assert not cache.refresh(), "nothing changed: nothing reloaded"
        assert cache.current() is state
        stat = shop.items_path.stat()
        os.utime(shop.items_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert cache.refresh() and cache.current() is not state


def test_a_new_key_is_found_after_the_key_table_changes(shop: Settings) -> None:
    with ServingClient("127.0.0.1", 9, 9, timeout_s=0.5) as client:
        cache = StateCache(shop, client)
        cache.refresh()
        assert cache.user_id("c-new") is None
        new_id = intern(shop, "users", pd.Series(["c-new"])).iloc[0]
        assert cache.user_id("c-new") == int(new_id)


def test_partitions_are_stated_only_every_so_often(
    shop: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recops.service import state as state_module

    def add_partition(day: str) -> None:
        folder = shop.interactions_dir / f"date={day}"
        folder.mkdir(parents=True)
        source = shop.interactions_dir / "date=2024-01-01" / "part-0.parquet"
        (folder / "part-0.parquet").write_bytes(source.read_bytes())

    with ServingClient("127.0.0.1", 9, 9, timeout_s=0.5) as client:
        cache = StateCache(shop, client)
        assert cache.refresh()
        add_partition("2024-01-02")
        assert not cache.refresh(), "a new partition waits for the next partition check"
        assert cache.refresh(force=True), "a forced refresh states them at once"
        assert cache.current().popularity[2] == 4.0
        monkeypatch.setattr(state_module, "PARTITIONS_CHECK_S", 0.0)
        add_partition("2024-01-03")
        assert cache.refresh() and cache.current().popularity[2] == 6.0


def test_a_canary_request_swaps_in_each_model_that_has_a_canary() -> None:
    from recops.service.state import ServedModel, ServedState

    def served(name: str, version: int, label: str = "stable") -> ServedModel:
        return ServedModel(name, version, {"user_id": "int64"}, label)

    base = dict(layout=None, items={}, item_keys={}, popular=[], popularity={},
                profile_refs=[], context_refs=[], history_online=False, published_seen={},
                store=None)  # fmt: skip
    retrieval, ranking = served("ret", 1), served("rank", 4)
    plain = ServedState(retrieval=retrieval, ranking=ranking, rerank_policy="fusion", **base)
    assert plain.variant("canary") == plain.variant("stable") == (retrieval, ranking, "fusion")

    new_retrieval = served("ret", 2, "canary")
    one = dataclasses.replace(plain, canary_retrieval=new_retrieval)
    # The stable ranker (and its policy) scores the canary retriever's candidates.
    assert one.variant("canary") == (new_retrieval, ranking, "fusion")
    assert one.variant("stable") == (retrieval, ranking, "fusion")

    new_ranking = served("rank", 5, "canary")
    other = dataclasses.replace(plain, canary_ranking=new_ranking, canary_policy="retrieval")
    assert other.variant("canary") == (retrieval, new_ranking, "retrieval")
    assert other.versions == {"retrieval": 1, "ranking": 4}
