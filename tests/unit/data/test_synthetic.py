"""Tests for the synthetic generator: deterministic, in schema, with planted structure."""

from __future__ import annotations

import pandas as pd
import pytest
from recops.data import DataError, synthesize


def test_synthetic_is_deterministic_and_structured() -> None:
    a = synthesize(rows=3000, users=50, items=80, days=5, seed=3)
    b = synthesize(rows=3000, users=50, items=80, days=5, seed=3)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    inter, users, items = a
    assert inter["rating"].between(1, 5).all()
    assert set(inter["user_id"]) <= set(users["user_id"])
    assert not inter.duplicated(["user_id", "item_id", "event_timestamp"]).any()
    assert inter["event_timestamp"].dt.normalize().nunique() == 5
    # Planted structure: the 10 % most popular items take far more than 10 % of events.
    counts = inter["item_id"].value_counts()
    assert counts.head(8).sum() / counts.sum() > 0.2
    c = synthesize(rows=3000, users=50, items=80, days=5, seed=4)[0]
    assert not c.equals(inter)


def test_synthetic_refuses_empty_sizes() -> None:
    with pytest.raises(DataError, match="must all be >= 1"):
        synthesize(rows=10, users=0, items=5, days=1, seed=1)
