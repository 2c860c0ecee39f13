"""Fixtures of the validation tests: a RECOPS_HOME per dataset, holding its spec and tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from _contract_tables import MOVIELENS, SHOP, make_home
from recops.config import Settings


@pytest.fixture(params=[MOVIELENS, SHOP])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Each dataset in turn: the checks that hold for any spec."""
    return make_home(tmp_path / "home", monkeypatch, request.param)


@pytest.fixture()
def movielens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The MovieLens-like dataset: explicit 1-5 values, allowed sets, no event types."""
    return make_home(tmp_path / "home", monkeypatch, MOVIELENS)


@pytest.fixture()
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shop: implicit typed events, interned string keys, an open price range."""
    return make_home(tmp_path / "home", monkeypatch, SHOP)
