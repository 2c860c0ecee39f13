"""``recops.config.airflow_env``: an embedded Airflow sized to the machine, deployments win."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recops.config import Settings, airflow_env, embedded_parallelism


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RECOPS_HOME", str(tmp_path / "home"))
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        monkeypatch.delenv(key)
    return Settings.from_env()


def test_parallelism_follows_the_cores_within_bounds() -> None:
    assert [embedded_parallelism(n) for n in (1, 2, 4, 64)] == [2, 2, 4, 8]
    assert embedded_parallelism() == embedded_parallelism(os.cpu_count())


def test_embedded_airflow_is_right_sized_sqlite_safe_and_on_loopback(settings: Settings) -> None:
    env = airflow_env(settings)
    workers = str(embedded_parallelism())
    assert env["AIRFLOW__CORE__PARALLELISM"] == workers
    assert env["AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG"] == workers
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__WORKERS"] == "1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith(f"sqlite:///{settings.airflow_home / 'airflow.db'}?timeout=")
    assert env["AIRFLOW__DATABASE__MAX_DB_RETRIES"] == "5"
    assert "great_expectations=WARNING" in env["AIRFLOW__LOGGING__NAMESPACE_LEVELS"]
    assert env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


def test_deployment_variables_win(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__PORT", "18080")
    monkeypatch.setenv("AIRFLOW__API__HOST", "0.0.0.0")
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "64")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://db/airflow")
    env = airflow_env(settings)
    assert env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "64"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql://db/airflow"
    # SQLite's lock-wait settings are left out for another database.
    assert "AIRFLOW__DATABASE__MAX_DB_RETRIES" not in env


def test_airflow_reads_the_embedded_settings(settings: Settings) -> None:
    # Airflow itself, in a fresh process, sees what we set (no typo in a section or key).
    import subprocess
    import sys

    probe = (
        "from airflow.configuration import conf; "
        "print(conf.getint('core','parallelism'), conf.get('api','host'), "
        "conf.getint('dag_processor','parsing_processes'), conf.get('database','max_db_retries'))"
    )
    env = {**os.environ, **airflow_env(settings)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(embedded_parallelism()), "127.0.0.1", "1", "5"]
