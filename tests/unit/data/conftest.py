"""Fixtures of the data tests: an empty RECOPS_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest
from recops.config import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    return Settings.from_env()
