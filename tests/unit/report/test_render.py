"""Unit tests for ``recops.report.render``: the page header names the run's dataset."""

from __future__ import annotations

from recops.report.render import dataset_of


def test_dataset_comes_from_lineage_then_the_version_tag() -> None:
    tagged = {"tags": {"recops.lineage.dataset": "shop-synthetic"}}
    assert dataset_of({"lineage": {"dataset": "movielens-100k"}, "version": tagged}) == (
        "movielens-100k"
    )
    assert dataset_of({"lineage": {}, "version": tagged}) == "shop-synthetic"
    # A run recorded before datasets existed says so instead of guessing.
    assert dataset_of({"lineage": {}, "version": None}) == "?"
