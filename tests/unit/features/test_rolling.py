"""Rolling feature sources (``recops.features.rolling``): incremental and byte-identical.

Built on the crafted history of ``_pit_data``: the same inputs give the same bytes
whether built in one step or two, an older interval never takes the sources back, and a
changed partition recomputes only from its own day on. Weights are arbitrary floats here,
so float sums must round the same whichever day a computation starts from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _pit_data import DATASETS, crafted, publish_canonical, settings_for
from recops.features import (
    ROLLING_FEATURES,
    RollingConfig,
    compute_rolling_features,
)


def test_rolling_sources_are_incremental_and_byte_identical(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "shop-synthetic")
    data = crafted("shop-synthetic")
    rng = np.random.default_rng(3)
    # Weights with no short binary form: a cumulative-sum difference would round differently
    # depending on where the grid starts.
    data.interactions["weight"] = rng.uniform(0.1, 5.0, len(data.interactions))
    publish_canonical(settings, data)
    # mid lies more than a window after the first event, so the second step's grid starts
    # inside the history (where a cumulative sum would already hold other roundings).
    mid, end = datetime(2024, 4, 10, tzinfo=UTC), datetime(2024, 4, 21, tzinfo=UTC)
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
    late = data.interactions
    late.loc[late.index[-1], "weight"] += 1.0
    publish_canonical(settings, data)
    changed = compute_rolling_features(RollingConfig(interval_end=end), settings)
    day = late.loc[late.index[-1], "event_timestamp"].floor("D")
    assert changed.recomputed_from == day.isoformat()
    assert pd.read_parquet(changed.uris["user_activity"])["event_timestamp"].equals(stamps)
    assert changed.sha256["user_activity"] != full.sha256["user_activity"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_snapshots_count_and_average_the_events_before_their_stamp(
    tmp_path: Path, dataset: str
) -> None:
    settings = settings_for(tmp_path / "home", dataset)
    data = crafted(dataset)
    publish_canonical(settings, data)
    result = compute_rolling_features(
        RollingConfig(interval_end=datetime(2024, 4, 21, tzinfo=UTC)), settings
    )
    events = data.interactions.assign(day=data.interactions["event_timestamp"].dt.floor("D"))
    for view, key in (("user_activity", "user_id"), ("item_popularity", "item_id")):
        source = pd.read_parquet(result.uris[view])
        assert list(source.columns) == [key, "event_timestamp", *ROLLING_FEATURES[view]]
        short, long, mean = ROLLING_FEATURES[view]
        assert str(source[short].dtype) == str(source[long].dtype) == "int64"
        assert str(source[mean].dtype) == "float64"
        for row in source.itertuples(index=False):
            stamp = pd.Timestamp(row.event_timestamp)
            mine = events[events[key] == getattr(row, key)]
            for width, name in ((7, short), (30, long)):
                window = mine[(mine.day < stamp) & (mine.day >= stamp - pd.Timedelta(days=width))]
                assert getattr(row, name) == len(window), (view, row, width)
            window = mine[(mine.day < stamp) & (mine.day >= stamp - pd.Timedelta(days=30))]
            if len(window):
                assert getattr(row, mean) == pytest.approx(window.weight.mean())
            else:
                assert np.isnan(getattr(row, mean))  # the "window just emptied" row
