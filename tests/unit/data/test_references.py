"""``recops.data.references``: the catalogue events may name, read once per file version."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from recops.config import REPO_ROOT
from recops.data.references import check_references, known_ids
from recops.dataset_spec import load_spec
from recops.errors import DataError


def _write(path: Path, ids: list[int]) -> None:
    pd.DataFrame({"item_id": pd.Series(ids, dtype="int64")}).to_parquet(path)


def test_known_ids_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    _write(path, [3, 1, 2])
    assert known_ids(path, "item_id") == frozenset({1, 2, 3})
    _write(path, [1, 2, 3, 4, 5])
    # A rewrite within the same clock tick still changes the size.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert known_ids(path, "item_id") == frozenset({1, 2, 3, 4, 5})
    with pytest.raises(FileNotFoundError):
        known_ids(tmp_path / "none.parquet", "item_id")


def test_events_outside_the_catalogue_are_named_by_the_files_keys() -> None:
    spec = load_spec(REPO_ROOT / "datasets" / "shop-synthetic.yaml")
    events = pd.DataFrame({"sku": ["a", "gone", "gone", "b"]})
    interactions = pd.DataFrame({"item_id": [1, 9, 9, 2]})
    items = pd.DataFrame({"item_id": [1, 2]})
    sources = {"events": "events.csv", "items": "products.csv"}
    with pytest.raises(DataError) as caught:
        check_references(spec, events, interactions, items, sources)
    assert str(caught.value).startswith(
        "events.csv: 2 event(s) name 1 sku value(s) that products.csv does not list"
    )
    assert "'gone'" in str(caught.value)
    check_references(spec, events.iloc[[0, 3]], interactions.iloc[[0, 3]], items, sources)
