"""The Spark engine's session (``recops.spark``): its conf, reuse, and clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from recops.config import Settings
from recops.errors import PermanentError
from recops.spark import LOCAL_SHUFFLE_PARTITIONS, SparkUnavailableError, spark_conf, spark_session

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Spark-engine settings on local[2]; the module's one session is stopped after."""
    settings = Settings(home=tmp_path_factory.mktemp("home"), engine="spark")
    yield settings
    spark_session(settings).stop()


def test_local_session_has_the_recops_conf_and_is_reused(settings: Settings) -> None:
    spark = spark_session(settings)
    conf = spark.sparkContext.getConf()
    assert spark.sparkContext.master == "local[2]"
    assert spark.sparkContext.appName == "recops"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.conf.get("spark.sql.shuffle.partitions") == str(LOCAL_SHUFFLE_PARTITIONS)
    assert conf.get("spark.ui.enabled") == "false"
    assert spark_session(settings) is spark
    # UTC session time: a UTC midnight reads back as midnight.
    row = spark.sql("SELECT CAST(TIMESTAMP'2024-03-01 00:00:00' AS STRING) AS t").first()
    assert row is not None and row["t"] == "2024-03-01 00:00:00"


def test_a_stopped_session_is_replaced(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, engine="spark", spark_master="local[1]")
    first = spark_session(settings)
    first.stop()
    second = spark_session(settings)
    try:
        assert second.sparkContext.master == "local[1]"
        assert second.range(3).count() == 3
    finally:
        second.stop()


def test_a_cluster_master_keeps_spark_defaults_for_shuffle_and_ui() -> None:
    conf = spark_conf("spark://spark-master:7077")
    assert conf["spark.master"] == "spark://spark-master:7077"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" not in conf and "spark.ui.enabled" not in conf


def test_a_bad_master_is_a_clear_permanent_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, engine="spark", spark_master="nonsense://nowhere")
    with pytest.raises(SparkUnavailableError, match="nonsense://nowhere") as caught:
        spark_session(settings)
    assert isinstance(caught.value, PermanentError)
    assert "RECOPS_SPARK_MASTER" in str(caught.value)


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real environment without Java: nothing on PATH, no JAVA_HOME.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    settings = Settings(home=tmp_path, engine="spark", spark_master="local[3]")
    with pytest.raises(SparkUnavailableError, match="Java 17"):
        spark_session(settings)
