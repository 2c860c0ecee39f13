"""Fixtures of the ``recops`` CLI tests: an empty home, and a home with synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RECOPS_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "RECOPS_LEDGER_URL", "RECOPS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="module")
def synth_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with 500 synthetic interactions, landed by `recops data synth --json`."""
    return tmp_path_factory.mktemp("synth") / "home"
