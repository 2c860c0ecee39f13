"""Which Feast repo yaml the settings select, that Feast accepts it, and one project per dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from recops.config import Settings
from recops.errors import PermanentError
from recops.features import FeatureRepoError, feast_ui_command, open_store
from recops.spark import DRIVER_MEMORY


def _loaded_config(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], yaml_name: str
) -> tuple[Settings, Any]:
    """Settings from ``env``, and the Feast config of the yaml they pick (named ``yaml_name``)."""
    from feast.repo_config import load_repo_config
    from recops.features import recops_home_env, yaml_path

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    path = yaml_path(settings)
    assert path.name == yaml_name
    with recops_home_env(settings):
        return settings, load_repo_config(settings.feature_repo, path)


@pytest.mark.parametrize(
    ("store", "profile", "yaml_name", "online_type"),
    [
        ("sqlite", "embedded", "feature_store.yaml", "sqlite"),
        ("redis", "embedded", "feature_store.redis.yaml", "redis"),
        ("redis", "scale", "feature_store.scale.yaml", "redis"),
    ],
)
def test_online_store_setting_picks_a_valid_feast_config(
    monkeypatch: pytest.MonkeyPatch, store: str, profile: str, yaml_name: str, online_type: str
) -> None:
    env = {
        "RECOPS_PROFILE": profile,
        "RECOPS_ONLINE_STORE": store,
        "RECOPS_REDIS_URL": "127.0.0.1:6379,db=7",
        "RECOPS_FEAST_REGISTRY_URL": "postgresql+psycopg2://u:p@db:5432/feast",
    }
    settings, config = _loaded_config(monkeypatch, env, yaml_name)
    assert config.online_store.type == online_type
    assert config.project == settings.feast_project == "recops_movielens_100k"
    if online_type == "sqlite":
        assert config.online_store.path == str(settings.feast_dir / "online_store.db")
    if online_type == "redis":
        assert config.online_store.connection_string == "127.0.0.1:6379,db=7"
    monkeypatch.setenv("RECOPS_ONLINE_STORE", "memcached")
    with pytest.raises(ValueError, match="RECOPS_ONLINE_STORE"):
        Settings.from_env()


def test_missing_repo_files_are_permanent_file_not_found_errors(tmp_path: Path) -> None:
    # Still FileNotFoundError (the ui command falls back on it), and permanent: no retry.
    settings = Settings(home=tmp_path / "home", feature_repo=tmp_path / "no-repo")
    with pytest.raises(FeatureRepoError, match="Feast repo config") as caught:
        open_store(settings)
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, PermanentError)
    with pytest.raises(FileNotFoundError, match="no Feast registry"):
        feast_ui_command(settings, 8888)


def test_each_dataset_is_its_own_project_with_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.repo_config import load_repo_config
    from recops.features import feast_env, recops_home_env, yaml_path

    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECOPS_DATASET", raising=False)
    base = Settings.from_env()
    seen = {}
    for dataset in ("movielens-100k", "shop-synthetic"):
        settings = base.for_dataset(dataset)
        with recops_home_env(settings):
            config = load_repo_config(settings.feature_repo, yaml_path(settings))
            # The definitions find the dataset through the pinned environment.
            assert Settings.from_env().dataset == dataset
        seen[dataset] = (config.project, str(config.registry.path))
        assert config.project == settings.feast_project
        assert config.registry.path == str(settings.feast_dir / "registry.db")
        assert feast_env(settings)["RECOPS_FEAST_DIR"] == str(tmp_path / "home" / "feast" / dataset)
    assert seen["movielens-100k"] != seen["shop-synthetic"]
    assert seen["shop-synthetic"][0] == "recops_shop_synthetic"
    # Whatever the block pinned is put back.
    assert Settings.from_env().dataset == "movielens-100k"


@pytest.mark.parametrize(
    ("store", "profile", "yaml_name"),
    [
        ("sqlite", "embedded", "feature_store.spark.yaml"),
        ("redis", "embedded", "feature_store.spark.redis.yaml"),
        ("redis", "scale", "feature_store.spark.scale.yaml"),
    ],
)
def test_spark_engine_picks_the_spark_offline_store(
    monkeypatch: pytest.MonkeyPatch, store: str, profile: str, yaml_name: str
) -> None:
    env = {
        "RECOPS_ENGINE": "spark",
        "RECOPS_SPARK_MASTER": "spark://spark-master:7077",
        "RECOPS_PROFILE": profile,
        "RECOPS_ONLINE_STORE": store,
        "RECOPS_FEAST_REGISTRY_URL": "postgresql+psycopg2://u:p@db:5432/feast",
    }
    settings, config = _loaded_config(monkeypatch, env, yaml_name)
    assert (config.offline_store.type, config.online_store.type) == ("spark", store)
    spark_conf = config.offline_store.spark_conf
    assert spark_conf["spark.master"] == "spark://spark-master:7077"
    assert spark_conf["spark.sql.session.timeZone"] == "UTC"
    assert spark_conf["spark.driver.memory"] == DRIVER_MEMORY  # as recops' own session
