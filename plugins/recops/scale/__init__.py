"""The scale-out profile on one machine: the same DAGs on real engines.

``recops scale up`` (``make scale-up``) starts, against the machine's Postgres and Redis:

* Airflow 3 with the **CeleryExecutor**: api-server, scheduler, dag-processor, triggerer
  and a Celery worker that serves the ``default`` and ``gpu`` queues; metadata and task
  results in Postgres, the queue in Redis;
* an **MLflow tracking server** with basic auth, its store in Postgres and artifacts
  served through it;
* the Feast **SQL registry** (Postgres) and the **Redis online store**, through
  ``RECOPS_PROFILE=scale`` (``feature_repo/feature_store.scale.yaml``).

Each profile gets its own databases (``<prefix>_airflow``, ``_mlflow``, ``_mlflow_auth``,
``_feast``) and Redis database numbers, so nothing collides with the embedded profile or
with a second stack started under another prefix. Secrets (Fernet key, API and JWT
secrets, the MLflow admin password) are generated once into ``<home>/scale/secrets.env``
(mode 0600) and handed to the processes through their environment; a variable already
set in the environment wins. Airflow's own users (``admin``, ``viewer``) get passwords
that Airflow's SimpleAuthManager generates into ``<home>/scale/passwords.json``.

Processes run in their own sessions with pid files and logs under ``<home>/scale/``;
``recops scale down`` stops them. docker-compose.yaml is the same topology in
containers.

Submodules, one concern each:

- ``recops.scale.config``: the services, ``ScaleConfig`` (settings) and ``ScaleStatus``.
- ``recops.scale.credentials``: the generated secrets file and Airflow's passwords.
- ``recops.scale.environment``: the environment of the stack's processes and of a shell.
- ``recops.scale.backends``: the profile's Postgres databases and Redis.
- ``recops.scale.processes``: start, wait for, list and stop the processes.
- ``recops.scale.api``: the Airflow REST API client that triggers and watches runs.
"""

from __future__ import annotations

from recops.errors import ScaleError
from recops.scale.api import AirflowApi
from recops.scale.backends import check_redis, drop_databases, ensure_databases
from recops.scale.config import (
    AIRFLOW_USERS,
    SERVICES,
    WORKER_QUEUES,
    ScaleConfig,
    ScaleConfigError,
    ScaleStatus,
)
from recops.scale.credentials import airflow_password, load_secrets
from recops.scale.environment import client_env, stack_env
from recops.scale.processes import down, running, status, up

__all__ = [
    "AIRFLOW_USERS",
    "SERVICES",
    "WORKER_QUEUES",
    "AirflowApi",
    "ScaleConfig",
    "ScaleConfigError",
    "ScaleError",
    "ScaleStatus",
    "airflow_password",
    "check_redis",
    "client_env",
    "down",
    "drop_databases",
    "ensure_databases",
    "load_secrets",
    "running",
    "stack_env",
    "status",
    "up",
]
