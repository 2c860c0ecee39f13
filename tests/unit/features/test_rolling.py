"""Rolling feature sources (``recops.features.rolling``): incremental and byte-identical.

Built on the crafted history of ``_pit_data``: the same inputs give the same bytes
whether built in one step or two, an older interval never takes the sources back, and a
changed partition recomputes only from its own day on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from _pit_data import crafted
from recops.config import Settings
from recops.data import publish
from recops.features import RollingConfig, compute_rolling_features


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECOPS_ONLINE_STORE", "sqlite")
    return Settings.from_env()


def test_rolling_sources_are_incremental_and_byte_identical(settings: Settings) -> None:
    inter, users, items = crafted()
    publish(settings, inter, users, items, source="test")
    mid, end = datetime(2024, 3, 20, tzinfo=UTC), datetime(2024, 4, 21, tzinfo=UTC)
    full = compute_rolling_features(RollingConfig(interval_end=end), settings)
    again = compute_rolling_features(RollingConfig(interval_end=end), settings)
    assert again.sha256 == full.sha256 and again.recomputed_from == ""
    # An older interval never takes the sources back.
    older = compute_rolling_features(RollingConfig(interval_end=mid), settings)
    assert older.sha256 == full.sha256 and older.through == full.through

    # Built in two steps from scratch: the same bytes as in one.
    for view in full.uris:
        Path(full.uris[view]).unlink()
    first = compute_rolling_features(RollingConfig(interval_end=mid), settings)
    assert first.through == mid.isoformat()
    step = compute_rolling_features(RollingConfig(interval_end=end), settings)
    assert step.recomputed_from == mid.isoformat()
    assert step.sha256 == full.sha256

    # A changed partition recomputes from its day on, and only the affected snapshots move.
    stamps = pd.read_parquet(full.uris["user_activity"])["event_timestamp"]
    late = inter.copy()
    late.loc[late.index[-1], "rating"] = 6 - late.loc[late.index[-1], "rating"]
    publish(settings, late, users, items, source="test")
    changed = compute_rolling_features(RollingConfig(interval_end=end), settings)
    day = late.loc[late.index[-1], "event_timestamp"].floor("D")
    assert changed.recomputed_from == day.isoformat()
    assert pd.read_parquet(changed.uris["user_activity"])["event_timestamp"].equals(stamps)
