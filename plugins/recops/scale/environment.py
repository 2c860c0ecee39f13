"""The environment every process of the stack runs with, and the one a shell needs.

``stack_env`` points Airflow at Postgres, Redis and Celery, and recops (inside every task)
at the MLflow server, the Feast SQL registry and the Redis online store;
``client_env`` is the part of it that ``eval $(recops scale env)`` exports.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from recops_models.tf_env import TF_ENV

from recops.airflow_logging import QUIET_ENV
from recops.config import REPO_ROOT
from recops.scale.config import AIRFLOW_USERS, ScaleConfig
from recops.scale.credentials import load_secrets

__all__ = ["client_env", "stack_env"]


def stack_env(config: ScaleConfig, secret_values: Mapping[str, str]) -> dict[str, str]:
    """The environment every process of the stack runs with (and tasks inherit).

    Args:
        config: The scale settings.
        secret_values: From :func:`load_secrets`.
    """
    airflow_home = config.home / "airflow"
    bin_dir = Path(sys.executable).parent
    redis = f"{config.redis_host}:{config.redis_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": config.pg_url("airflow"),
            # The queue lives in Redis, the task results in Postgres: losing the broker
            # loses no outcome.
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{redis}/{config.broker_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + config.pg_url("airflow", "postgresql"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(config.worker_concurrency),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(config.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": config.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{config.api_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": AIRFLOW_USERS,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(config.passwords_path),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(config.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(config.triggerer_log_port),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # What recops.config.Settings.from_env() reads inside every task.
            "RECOPS_PROFILE": "scale",
            "RECOPS_HOME": str(config.home),
            "MLFLOW_TRACKING_URI": config.mlflow_url,
            "RECOPS_LEDGER_URL": config.pg_url("mlflow"),
            "RECOPS_FEAST_REGISTRY_URL": config.pg_url("feast"),
            "RECOPS_ONLINE_STORE": "redis",
            "RECOPS_REDIS_URL": f"{redis},db={config.feast_db}",
            "RECOPS_GRPC_PORT": str(config.grpc_port),
            "RECOPS_REST_PORT": str(config.rest_port),
            **TF_ENV,
            # The embedded profile's quiet task logs (library noise filtered at the source).
            **QUIET_ENV,
            "PYTHONUNBUFFERED": "1",
            # Airflow starts some children as `airflow ...` from PATH.
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    env.update(secret_values)
    env.update(config.extra_env)
    return env


def client_env(config: ScaleConfig) -> dict[str, str]:
    """The variables a shell needs to point ``recops`` commands at the running stack."""
    values = load_secrets(config)
    full = stack_env(config, values)
    keys = [k for k in full if k.startswith(("RECOPS_", "MLFLOW_TRACKING_"))]
    return {k: full[k] for k in sorted(keys)}
