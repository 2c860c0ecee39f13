"""What the scale stack is: its services, its settings and the status it reports.

``ScaleConfig`` says where each service of the stack lives on this machine (Postgres,
Redis, ports, the state folder); ``ScaleStatus`` is what ``recops scale up`` and
``recops scale status`` report. Leaf of ``recops.scale``: no I/O, nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The same parsing of settings variables as recops.config (empty means unset).
from recops.config import env_int, env_str
from recops.errors import PermanentError
from recops.records import Record

__all__ = [
    "AIRFLOW_USERS",
    "DB_SUFFIXES",
    "SERVICES",
    "WORKER_QUEUES",
    "ScaleConfig",
    "ScaleConfigError",
    "ScaleStatus",
]

#: Processes of the stack, in start order; the value is the command after the venv's bin.
SERVICES: tuple[str, ...] = (
    "mlflow",
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
    "worker",
)
#: Airflow users SimpleAuthManager creates, ``name:role``.
AIRFLOW_USERS = "admin:admin,viewer:viewer"
#: Queues the local Celery worker serves; training tasks go to ``gpu`` (RECOPS_GPU_QUEUE).
WORKER_QUEUES = ("default", "gpu")
#: Suffixes of the profile's Postgres databases (``<prefix>_<suffix>``).
DB_SUFFIXES = ("airflow", "mlflow", "mlflow_auth", "feast")


class ScaleConfigError(PermanentError, ValueError):
    """A ``RECOPS_SCALE_*`` setting that cannot be used (a ``ValueError``, as it was)."""


@dataclass(frozen=True, kw_only=True)
class ScaleConfig:
    """Where the scale stack's services live on this machine.

    Attributes:
        home: RECOPS_HOME of the scale profile's processes (``RECOPS_SCALE_HOME``).
        pg_host: Postgres host (``RECOPS_SCALE_PG_HOST``).
        pg_port: Postgres port (``RECOPS_SCALE_PG_PORT``).
        pg_user: Postgres role that owns the profile's databases (``RECOPS_SCALE_PG_USER``).
        pg_password: Its password (``RECOPS_SCALE_PG_PASSWORD``; empty with trust auth).
        db_prefix: Prefix of the profile's database names (``RECOPS_SCALE_DB_PREFIX``).
        redis_host: Redis host (``RECOPS_SCALE_REDIS_HOST``).
        redis_port: Redis port (``RECOPS_SCALE_REDIS_PORT``).
        broker_db: Redis database of the Celery queue (``RECOPS_SCALE_BROKER_DB``).
        feast_db: Redis database of the Feast online store (``RECOPS_SCALE_FEAST_DB``).
        api_port: Airflow API server / UI (``RECOPS_SCALE_API_PORT``).
        mlflow_port: MLflow tracking server (``RECOPS_SCALE_MLFLOW_PORT``).
        grpc_port: Model server gRPC (``RECOPS_SCALE_GRPC_PORT``).
        rest_port: Model server REST (``RECOPS_SCALE_REST_PORT``).
        worker_log_port: Celery worker's log server (``RECOPS_SCALE_WORKER_LOG_PORT``).
        triggerer_log_port: Triggerer's log server (``RECOPS_SCALE_TRIGGERER_LOG_PORT``).
        worker_concurrency: Task slots of the local Celery worker.
        extra_env: Further variables for every process (Airflow settings a test shortens).
    """

    home: Path
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    db_prefix: str = "recops_scale"
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    broker_db: int = 2
    feast_db: int = 3
    api_port: int = 8180
    mlflow_port: int = 5100
    grpc_port: int = 8600
    rest_port: int = 8601
    worker_log_port: int = 8893
    triggerer_log_port: int = 8894
    worker_concurrency: int = 2
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, home: Path | None = None) -> ScaleConfig:
        """Deployment settings from ``RECOPS_SCALE_*`` variables, with embedded defaults.

        Args:
            home: State folder; default ``RECOPS_SCALE_HOME`` or ``./.recops/scale`` (never
                the embedded profile's ``RECOPS_HOME``, so the two never share state).
        """
        if home is None:
            home = Path(env_str("RECOPS_SCALE_HOME", str(Path.cwd() / ".recops" / "scale")))
        prefix = env_str("RECOPS_SCALE_DB_PREFIX", "recops_scale")
        if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha() or len(prefix) > 40:
            raise ScaleConfigError(
                f"RECOPS_SCALE_DB_PREFIX={prefix!r}: use letters, digits and '_' (at most 40)"
            )
        return cls(
            home=home.expanduser().resolve(),
            pg_host=env_str("RECOPS_SCALE_PG_HOST", "127.0.0.1"),
            pg_port=env_int("RECOPS_SCALE_PG_PORT", 5432),
            pg_user=env_str("RECOPS_SCALE_PG_USER", "postgres"),
            pg_password=os.environ.get("RECOPS_SCALE_PG_PASSWORD", ""),
            db_prefix=prefix,
            redis_host=env_str("RECOPS_SCALE_REDIS_HOST", "127.0.0.1"),
            redis_port=env_int("RECOPS_SCALE_REDIS_PORT", 6379),
            broker_db=env_int("RECOPS_SCALE_BROKER_DB", 2),
            feast_db=env_int("RECOPS_SCALE_FEAST_DB", 3),
            api_port=env_int("RECOPS_SCALE_API_PORT", 8180),
            mlflow_port=env_int("RECOPS_SCALE_MLFLOW_PORT", 5100),
            grpc_port=env_int("RECOPS_SCALE_GRPC_PORT", 8600),
            rest_port=env_int("RECOPS_SCALE_REST_PORT", 8601),
            worker_log_port=env_int("RECOPS_SCALE_WORKER_LOG_PORT", 8893),
            triggerer_log_port=env_int("RECOPS_SCALE_TRIGGERER_LOG_PORT", 8894),
            worker_concurrency=env_int("RECOPS_SCALE_WORKER_CONCURRENCY", 2),
        )

    # --- derived -------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Pid files, logs, secrets and Airflow's generated passwords."""
        return self.home / "scale"

    @property
    def secrets_path(self) -> Path:
        """The generated secrets (mode 0600)."""
        return self.state_dir / "secrets.env"

    @property
    def passwords_path(self) -> Path:
        """The Airflow users' passwords SimpleAuthManager writes."""
        return self.state_dir / "passwords.json"

    @property
    def api_url(self) -> str:
        """The Airflow API server and UI."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        """The MLflow tracking server."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    def database(self, suffix: str) -> str:
        """Name of one of the profile's databases (``airflow``, ``mlflow``, ...)."""
        return f"{self.db_prefix}_{suffix}"

    def pg_url(self, suffix: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of one of the profile's databases."""
        auth = self.pg_user + (f":{self.pg_password}" if self.pg_password else "")
        return f"{driver}://{auth}@{self.pg_host}:{self.pg_port}/{self.database(suffix)}"


@dataclass(frozen=True)
class ScaleStatus(Record):
    """What runs, where it answers, and where its logs are.

    Attributes:
        running: Service -> pid, for the services that are up.
        stopped: Services that are not running.
        airflow_url: Airflow UI and REST API.
        mlflow_url: MLflow tracking server (basic auth).
        logs: Folder of the services' logs.
        databases: The profile's Postgres databases.
    """

    running: dict[str, int]
    stopped: list[str]
    airflow_url: str
    mlflow_url: str
    logs: str
    databases: list[str]
