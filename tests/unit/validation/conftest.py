"""Fixtures of the validation tests: a RECOPS_HOME holding tiny users and items tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from _contract_tables import write_items, write_users
from recops.config import Settings


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True)
    write_users(settings.users_path)
    write_items(settings.items_path)
    return settings
