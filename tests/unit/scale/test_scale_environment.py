"""``recops.scale.environment``: what the stack's processes and a shell are told."""

from __future__ import annotations

from pathlib import Path

import pytest
from recops.scale import ScaleConfig, client_env, load_secrets, stack_env
from recops_models.tf_env import TF_ENV


def test_stack_env_points_everything_at_the_profile(tmp_path: Path) -> None:
    config = ScaleConfig(home=tmp_path, db_prefix="p", broker_db=4, extra_env={"X_EXTRA": "1"})

    env = stack_env(config, {"MLFLOW_TRACKING_PASSWORD": "secret"})

    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/4"
    assert env["RECOPS_PROFILE"] == "scale" and env["RECOPS_HOME"] == str(tmp_path)
    assert all(env[name] == value for name, value in TF_ENV.items())
    assert env["MLFLOW_TRACKING_PASSWORD"] == "secret" and env["X_EXTRA"] == "1"


def test_client_env_holds_only_recops_and_mlflow_client_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    config = ScaleConfig(home=tmp_path)
    secrets = load_secrets(config, create=True)

    env = client_env(config)

    assert config.secrets_path.stat().st_mode & 0o777 == 0o600
    assert env["MLFLOW_TRACKING_PASSWORD"] == secrets["MLFLOW_TRACKING_PASSWORD"]
    assert all(name.startswith(("RECOPS_", "MLFLOW_TRACKING_")) for name in env)
    assert load_secrets(config, create=True) == secrets  # generated once, never rewritten
