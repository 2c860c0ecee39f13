"""``recops.scale.config``: settings from ``RECOPS_SCALE_*``, and the façade's surface."""

from __future__ import annotations

from pathlib import Path

import pytest
import recops.scale
from recops.errors import PermanentError
from recops.scale import ScaleConfig, ScaleConfigError


def test_from_env_reads_the_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_SCALE_HOME", str(tmp_path / "s"))
    monkeypatch.setenv("RECOPS_SCALE_DB_PREFIX", "mine")
    monkeypatch.setenv("RECOPS_SCALE_API_PORT", "9180")
    monkeypatch.setenv("RECOPS_SCALE_PG_PASSWORD", "pw")

    config = ScaleConfig.from_env()

    assert config.home == (tmp_path / "s").resolve() and config.state_dir == config.home / "scale"
    assert config.api_url == "http://127.0.0.1:9180"
    assert config.database("feast") == "mine_feast"
    assert (
        config.pg_url("airflow") == "postgresql+psycopg2://postgres:pw@127.0.0.1:5432/mine_airflow"
    )


@pytest.mark.parametrize("prefix", ["9lives", "bad-name", "x" * 41])
def test_a_bad_db_prefix_is_refused(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOPS_SCALE_DB_PREFIX", prefix)

    with pytest.raises(ScaleConfigError, match="RECOPS_SCALE_DB_PREFIX") as caught:
        ScaleConfig.from_env()
    # Still a ValueError, as before the error tree existed, and a permanent one.
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PermanentError)


def test_facade_exports_what_callers_import() -> None:
    used = {"SERVICES", "WORKER_QUEUES", "AirflowApi", "ScaleConfig", "airflow_password"}
    used |= {"down", "load_secrets", "running", "stack_env", "up", "status", "client_env"}
    assert used <= set(recops.scale.__all__)
    assert all(hasattr(recops.scale, name) for name in recops.scale.__all__)
