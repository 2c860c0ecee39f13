"""The same answers on every engine: the features stage on pandas, DuckDB and Spark.

One small dataset (the crafted shop history of ``_pit_data``: events on midnight and in
the same second, a user back after the TTL) goes through ``build_features`` in three
homes, one per engine. The rolling sources and both point-in-time sets must be the same
row for row (the pandas engine is the reference; its joins are checked against
``merge_asof`` in ``tests/unit/features/test_training_sets.py``), and every entity row
comes back, duplicates included. The Spark run is the features stage on Spark
``local[2]`` (Feast's Spark offline store over ``SparkSource``).

The validate stage's GX suites give the same outcome on the Spark datasource as on
pandas, for a good and a bad partition.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from recops.config import REPO_ROOT, Settings
from recops.features import FeaturesConfig, FeaturesResult, build_features
from recops.features.feast_repo import ROLLING_VIEWS

pytest.importorskip("pyspark")
# About two minutes on two cores: the features stage three times, Spark's start-up once.
pytestmark = [pytest.mark.slow, pytest.mark.integration]

# The crafted canonical data lives beside the features' unit tests.
sys.path.insert(0, str(REPO_ROOT / "tests" / "unit" / "features"))
from _pit_data import crafted, publish_canonical, settings_for  # noqa: E402

DATASET = "shop-synthetic"
ENGINES = ("pandas", "duckdb", "spark")
DAY = datetime(2024, 4, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The module's one Spark session (local[2]); stopped after the module."""
    from recops.spark import spark_session

    settings = Settings(home=tmp_path_factory.mktemp("spark"), engine="spark")
    spark_session(settings)
    yield settings.spark_master
    spark_session(settings).stop()


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, spark_master: str
) -> dict[str, tuple[Settings, FeaturesResult]]:
    """``build_features`` of the crafted shop data on each engine, in its own home."""
    data = crafted(DATASET)
    out = {}
    for engine in ENGINES:
        home = tmp_path_factory.mktemp(engine)
        settings = dataclasses.replace(
            settings_for(home, DATASET), engine=engine, spark_master=spark_master
        )
        publish_canonical(settings, data)
        config = FeaturesConfig(
            interval_start=DAY,
            interval_end=DAY + pd.Timedelta(days=1),
            output_dir=str(settings.runs_dir / "2024-04-20" / "features"),
        )
        out[engine] = (settings, build_features(config, settings))
    return out


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("event_timestamp", "user_id", "item_id", "event_type") if c in frame]
    rest = [c for c in frame.columns if c not in keys]
    return frame.sort_values([*keys, *rest], kind="stable").reset_index(drop=True)


def _assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.dtypes.astype(str).tolist() == want.dtypes.astype(str).tolist()
    # Means are exact decimals divided once; 1e-12 leaves room for a last-bit rounding.
    pd.testing.assert_frame_equal(_sorted(got), _sorted(want), check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_rolling_sources_are_the_same_on_every_engine(
    built: dict[str, tuple[Settings, FeaturesResult]], engine: str
) -> None:
    reference = built["pandas"][1].rolling
    for view in ROLLING_VIEWS:
        got = pd.read_parquet(built[engine][1].rolling[view])
        want = pd.read_parquet(reference[view])
        assert len(got) > 0
        _assert_frames_equal(got, want)


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
@pytest.mark.parametrize("which", ["training_set_uri", "ranking_set_uri"])
def test_training_and_ranking_sets_are_the_same_on_every_engine(
    built: dict[str, tuple[Settings, FeaturesResult]], engine: str, which: str
) -> None:
    n_events = len(crafted(DATASET).interactions)
    want = pd.read_parquet(getattr(built["pandas"][1], which))
    got = pd.read_parquet(getattr(built[engine][1], which))
    # No entity row is lost (the crafted data has rows sharing a key and a second).
    assert len(got) == len(want) == n_events
    _assert_frames_equal(got, want)


def test_profile_snapshots_are_the_same_on_every_engine(
    built: dict[str, tuple[Settings, FeaturesResult]],
) -> None:
    for which in ("users_uri", "items_uri"):
        want = pd.read_parquet(getattr(built["pandas"][1], which))
        for engine in ("duckdb", "spark"):
            _assert_frames_equal(pd.read_parquet(getattr(built[engine][1], which)), want)


def _suite_outcomes(tables: dict[str, Any], settings: Settings, day: datetime) -> list[tuple]:
    from recops.validation import ContractConfig
    from recops.validation.contract import contract_spec
    from recops.validation.suites import run_suites

    checks, _ = run_suites(
        tables,
        spec=contract_spec(settings.data_dir / "spec.yaml"),
        start=day,
        end=day + timedelta(days=1),
        contract=ContractConfig(),
        band=None,
        docs_dir=None,
        settings=settings,
    )
    # GX counts unexpected values of a type check on pandas object columns (element by
    # element) but checks a Spark column's declared type only: the counts are not compared.
    return [
        (
            c.table, c.check, c.expectation_type,
            # "now" is read when each run builds its suites.
            {} if c.check == "interactions.no_future_events" else c.kwargs,
            c.success,
            None if c.expectation_type == "expect_column_values_to_be_of_type"
            else c.unexpected_count,
            c.error,
        )
        for c in checks
    ]  # fmt: skip


def test_validation_suites_give_the_same_outcome_on_spark_and_pandas(
    tmp_path: Path, spark_master: str
) -> None:
    from recops.validation.tables import frame_table, read_table

    pandas_settings = settings_for(tmp_path / "home", DATASET)
    publish_canonical(pandas_settings, crafted(DATASET))
    spark_settings = dataclasses.replace(pandas_settings, engine="spark", spark_master=spark_master)
    day = datetime(2024, 3, 2, tzinfo=UTC)
    partition = pandas_settings.interactions_dir / f"date={day.date()}" / "part-0.parquet"
    # The crafted profiles change over time; the contract wants one row per key.
    users, items = (
        read_table(name, path).frame.drop_duplicates(key, keep="first")
        for name, path, key in (
            ("users", pandas_settings.users_path, "user_id"),
            ("items", pandas_settings.items_path, "item_id"),
        )
    )
    good = {
        "interactions": read_table("interactions", partition),
        "users": frame_table("users", pandas_settings.users_path, users),
        "items": frame_table("items", pandas_settings.items_path, items),
    }
    events = good["interactions"].frame
    bad_events = pd.concat(
        [
            events,
            # An undeclared event type, a weight not above 0, an unknown item, an event
            # after the interval, and an exact duplicate.
            events.iloc[[0]].assign(event_type="refund"),
            events.iloc[[0]].assign(weight=-1.0),
            events.iloc[[0]].assign(item_id=999),
            events.iloc[[0]].assign(
                event_timestamp=events["event_timestamp"].iloc[0] + pd.Timedelta(days=2)
            ),
            events.iloc[[1]],
        ],
        ignore_index=True,
    )
    items = items.copy()
    # A missing price (NaN in pandas, a null once in Spark) breaks its not_null rule.
    items.loc[0, "price"] = float("nan")
    bad = {
        "interactions": frame_table("interactions", partition, bad_events),
        "users": good["users"],
        "items": frame_table("items", pandas_settings.items_path, items),
    }
    for tables, passes in ((good, True), (bad, False)):
        on_pandas = _suite_outcomes(tables, pandas_settings, day)
        on_spark = _suite_outcomes(tables, spark_settings, day)
        diff = [(p, s) for p, s in zip(on_pandas, on_spark, strict=True) if p != s]
        assert diff == []
        assert all(outcome[4] for outcome in on_pandas) is passes
    failed = {outcome[1] for outcome in _suite_outcomes(bad, spark_settings, day) if not outcome[4]}
    assert {
        "interactions.expect_column_values_to_be_in_set.event_type",
        "interactions.expect_column_values_to_be_between.weight",
        "interactions.expect_column_values_to_be_in_set.item_id",
        "interactions.expect_compound_columns_to_be_unique",
        "items.expect_column_values_to_not_be_null.price",
    } <= failed
