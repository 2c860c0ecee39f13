"""The Spark engine's rolling snapshots (``recops.features.rolling_spark``) equal the others'.

Built on the crafted histories of ``_pit_data`` (events on midnight, in the same second,
a user back after the window and after the TTL): ``compute_rolling_features`` on the
``spark`` engine writes the same rows as on ``duckdb`` and on the ``pandas`` reference,
counts exactly and means to 1e-12, in one step and incrementally.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from _pit_data import DATASETS, crafted, publish_canonical, settings_for
from recops.config import Settings
from recops.features import ROLLING_FEATURES, RollingConfig, compute_rolling_features
from recops.features.feast_repo import ROLLING_VIEWS

pytest.importorskip("pyspark")

END = datetime(2024, 4, 21, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings template for the Spark engine; the module's one session is stopped after."""
    from recops.spark import spark_session

    settings = Settings(home=tmp_path_factory.mktemp("spark"), engine="spark")
    spark_session(settings)
    yield settings
    spark_session(settings).stop()


def _sources(settings: Settings, end: datetime = END) -> dict[str, pd.DataFrame]:
    result = compute_rolling_features(RollingConfig(interval_end=end), settings)
    return {view: pd.read_parquet(result.uris[view]) for view in ROLLING_VIEWS}


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, view: str) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.astype(str).tolist() == want.dtypes.astype(str).tolist()
    assert len(got) == len(want) and len(got) > 0
    short, long, mean = ROLLING_FEATURES[view]
    exact = [c for c in got.columns if c != mean]
    pd.testing.assert_frame_equal(got[exact], want[exact])
    assert got[mean].isna().tolist() == want[mean].isna().tolist()
    present = want[mean].notna()
    assert got.loc[present, mean].tolist() == pytest.approx(
        want.loc[present, mean].tolist(), rel=1e-12
    )


@pytest.mark.parametrize("dataset", DATASETS)
def test_spark_snapshots_equal_duckdb_and_pandas(
    tmp_path: Path, dataset: str, spark_settings: Settings
) -> None:
    data = crafted(dataset)
    outputs = {}
    for engine in ("pandas", "duckdb", "spark"):
        settings = dataclasses.replace(
            settings_for(tmp_path / engine, dataset),
            engine=engine,
            spark_master=spark_settings.spark_master,
        )
        publish_canonical(settings, data)
        outputs[engine] = _sources(settings)
    for view in ROLLING_VIEWS:
        _assert_same(outputs["spark"][view], outputs["pandas"][view], view)
        _assert_same(outputs["spark"][view], outputs["duckdb"][view], view)


def test_spark_incremental_build_equals_one_step(tmp_path: Path, spark_settings: Settings) -> None:
    data = crafted("shop-synthetic")
    settings = dataclasses.replace(
        settings_for(tmp_path / "home", "shop-synthetic"),
        engine="spark",
        spark_master=spark_settings.spark_master,
    )
    publish_canonical(settings, data)
    full = _sources(settings)
    for view in ROLLING_VIEWS:
        (settings.data_dir / "features" / f"{view}.parquet").unlink()
    _sources(settings, datetime(2024, 4, 10, tzinfo=UTC))
    stepped = _sources(settings)
    for view in ROLLING_VIEWS:
        pd.testing.assert_frame_equal(stepped[view], full[view])


def test_spark_empty_history_gives_empty_sources(tmp_path: Path, spark_settings: Settings) -> None:
    from recops.features.rolling_spark import rolling_tables_spark
    from recops.features.rolling_sql import RollingGrid

    grid = RollingGrid(
        grid_start=datetime(2024, 3, 1, tzinfo=UTC),
        emit_from=datetime(2024, 4, 1, tzinfo=UTC),
        emit_to=END,
        short_days=7,
        long_days=30,
    )
    tables = rolling_tables_spark(spark_settings, [], ROLLING_FEATURES, grid)
    assert {view: t.num_rows for view, t in tables.items()} == {v: 0 for v in ROLLING_VIEWS}
    assert tables["user_activity"].column_names == [
        "user_id", "event_timestamp", *ROLLING_FEATURES["user_activity"],
    ]  # fmt: skip
