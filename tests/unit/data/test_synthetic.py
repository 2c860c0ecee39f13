"""The synthetic generator: deterministic, the files its spec declares, planted structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recops.data import DataError, synthesize, synthetic_tables, write_synthetic
from recops.dataset_check import check_columns
from recops.dataset_spec import load_spec
from recops.layout import INTERACTION_COLUMNS

DATASETS = Path(__file__).resolve().parents[3] / "datasets"


def test_movielens_mode_is_deterministic_in_layout_and_structured() -> None:
    a = synthesize(rows=3000, users=50, items=80, days=5, seed=3)
    b = synthesize(rows=3000, users=50, items=80, days=5, seed=3)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    inter, users, items = a
    assert tuple(inter.columns) == INTERACTION_COLUMNS
    assert inter["weight"].between(1, 5).all()
    assert set(inter["user_id"]) <= set(users["user_id"])
    assert not inter.duplicated(["user_id", "item_id", "event_timestamp"]).any()
    assert inter["event_timestamp"].dt.normalize().nunique() == 5
    # Planted structure: the 10 % most popular items take far more than 10 % of events.
    counts = inter["item_id"].value_counts()
    assert counts.head(8).sum() / counts.sum() > 0.2
    c = synthesize(rows=3000, users=50, items=80, days=5, seed=4)[0]
    assert not c.equals(inter)


@pytest.mark.parametrize("mode", ["movielens", "shop"])
def test_each_mode_writes_files_that_fit_its_shipped_spec(mode: str, tmp_path: Path) -> None:
    spec_path = write_synthetic(tmp_path, mode=mode, rows=300, users=20, items=30, days=2, seed=1)

    spec = load_spec(spec_path)
    assert spec_path.parent == tmp_path and spec.name in spec_path.name
    files = spec.file_paths(spec_path)
    frames = {t: pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
              for t, p in files.items()}  # fmt: skip
    check_columns(spec, frames)
    if mode == "shop":
        assert spec_path.read_text() == (DATASETS / "shop-synthetic.yaml").read_text()


def test_shop_mode_has_string_keys_a_funnel_and_iso_times() -> None:
    tables = synthetic_tables(mode="shop", rows=2000, users=40, items=60, days=3, seed=5)
    events, customers, products = tables["events"], tables["users"], tables["items"]

    assert customers["customer"].str.fullmatch(r"c-\d{6}").all()
    assert products["sku"].str.fullmatch(r"SKU-\d{5,}").all() and products["sku"].is_unique
    assert (events["event"] == "view").sum() == 2000
    counts = events["event"].value_counts()
    assert counts["view"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert events["ts"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert products["price"].gt(0).all() and products["category"].nunique() > 3
    assert set(customers["country"]) <= {"DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE"}


def test_shop_positives_follow_personal_taste_more_than_popularity() -> None:
    """Ranking by a customer's favourite categories (from earlier events) beats popularity."""
    tables = synthetic_tables(mode="shop", rows=20_000, users=200, items=400, days=10, seed=7)
    category = tables["items"].set_index("sku")["category"]
    events = tables["events"].assign(category=lambda e: e["sku"].map(category))
    cut = events["ts"].sort_values().iloc[int(len(events) * 0.8)]
    train, test = events[events["ts"] < cut], events[events["ts"] >= cut]
    positives = test[test["event"] != "view"].groupby("customer")["sku"].agg(set)
    popular = train["sku"].value_counts()
    hits_pop = hits_taste = 0
    for customer, truth in positives.items():
        mine = train[train["customer"] == customer]
        candidates = popular.drop(list(set(mine["sku"])), errors="ignore")
        liked = mine["category"].value_counts()
        # Popularity breaks ties within a category: the sort is stable.
        taste = candidates.index.map(category).map(liked).fillna(0).to_numpy()
        by_taste = candidates.index[np.argsort(-taste, kind="stable")]
        hits_pop += len(truth & set(candidates.index[:10]))
        hits_taste += len(truth & set(by_taste[:10]))
    assert hits_taste > 1.5 * hits_pop > 0


def test_bad_modes_and_sizes_are_refused() -> None:
    with pytest.raises(DataError, match="must all be >= 1"):
        synthesize(rows=10, users=0, items=5, days=1, seed=1)
    with pytest.raises(DataError, match="unknown synthetic mode 'bank'"):
        synthetic_tables(mode="bank", rows=1, users=1, items=1, days=1, seed=1)
