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
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recops.config import REPO_ROOT, _env, _env_int

# The same parsing of settings variables as recops.config (empty means unset).
from recops.errors import ScaleError
from recops.records import Record

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
_DB_SUFFIXES = ("airflow", "mlflow", "mlflow_auth", "feast")


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
            home = Path(_env("RECOPS_SCALE_HOME", str(Path.cwd() / ".recops" / "scale")))
        prefix = _env("RECOPS_SCALE_DB_PREFIX", "recops_scale")
        if not prefix.replace("_", "").isalnum() or not prefix[0].isalpha() or len(prefix) > 40:
            raise ValueError(
                f"RECOPS_SCALE_DB_PREFIX={prefix!r}: use letters, digits and '_' (at most 40)"
            )
        return cls(
            home=home.expanduser().resolve(),
            pg_host=_env("RECOPS_SCALE_PG_HOST", "127.0.0.1"),
            pg_port=_env_int("RECOPS_SCALE_PG_PORT", 5432),
            pg_user=_env("RECOPS_SCALE_PG_USER", "postgres"),
            pg_password=os.environ.get("RECOPS_SCALE_PG_PASSWORD", ""),
            db_prefix=prefix,
            redis_host=_env("RECOPS_SCALE_REDIS_HOST", "127.0.0.1"),
            redis_port=_env_int("RECOPS_SCALE_REDIS_PORT", 6379),
            broker_db=_env_int("RECOPS_SCALE_BROKER_DB", 2),
            feast_db=_env_int("RECOPS_SCALE_FEAST_DB", 3),
            api_port=_env_int("RECOPS_SCALE_API_PORT", 8180),
            mlflow_port=_env_int("RECOPS_SCALE_MLFLOW_PORT", 5100),
            grpc_port=_env_int("RECOPS_SCALE_GRPC_PORT", 8600),
            rest_port=_env_int("RECOPS_SCALE_REST_PORT", 8601),
            worker_log_port=_env_int("RECOPS_SCALE_WORKER_LOG_PORT", 8893),
            triggerer_log_port=_env_int("RECOPS_SCALE_TRIGGERER_LOG_PORT", 8894),
            worker_concurrency=_env_int("RECOPS_SCALE_WORKER_CONCURRENCY", 2),
        )

    # --- derived -------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Pid files, logs, secrets and Airflow's generated passwords."""
        return self.home / "scale"

    @property
    def secrets_path(self) -> Path:
        return self.state_dir / "secrets.env"

    @property
    def passwords_path(self) -> Path:
        return self.state_dir / "passwords.json"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
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


# --- secrets ------------------------------------------------------------------------------


def _generate_secrets() -> dict[str, str]:
    return {
        # Fernet needs exactly 32 random bytes, url-safe base64.
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": secrets.token_hex(24),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
    }


def load_secrets(config: ScaleConfig, *, create: bool = False) -> dict[str, str]:
    """The stack's secrets: the environment's values, else the generated file's.

    Args:
        config: The scale settings.
        create: Generate the file (mode 0600, never overwritten) when it is missing.

    Raises:
        ScaleError: The file is missing and ``create`` is false.
    """
    path = config.secrets_path
    if not path.exists():
        if not create:
            raise ScaleError(f"{path} is missing: run `recops scale up` (make scale-up) first")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# Generated by recops scale up. Secret: never commit or share it."]
        lines += [f"{k}={v}" for k, v in _generate_secrets().items()]
        try:
            # O_EXCL: two concurrent `scale up`s never write two different sets of keys.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write("\n".join(lines) + "\n")
    values: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ScaleError(f"{path}:{n}: expected NAME=value, got {line[:40]!r}")
        values[name.strip()] = value.strip()
    for name in list(values):
        if os.environ.get(name):
            values[name] = os.environ[name]
    return values


def airflow_password(config: ScaleConfig, user: str = "admin") -> str:
    """The password SimpleAuthManager generated for ``user`` (read from its file).

    Raises:
        ScaleError: The API server has not written the file yet (the stack is not up).
    """
    try:
        passwords = json.loads(config.passwords_path.read_text())
    except FileNotFoundError as exc:
        raise ScaleError(
            f"{config.passwords_path} is missing: is the stack up? (`recops scale up`)"
        ) from exc
    if user not in passwords:
        raise ScaleError(
            f"no Airflow user {user!r} in {config.passwords_path}; users: {sorted(passwords)}"
        )
    return str(passwords[user])


# --- environment --------------------------------------------------------------------------


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
            "TF_USE_LEGACY_KERAS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
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


# --- Postgres and Redis ---------------------------------------------------------------------


def _pg_connect(config: ScaleConfig, dbname: str = "postgres") -> Any:
    import psycopg2

    try:
        return psycopg2.connect(
            host=config.pg_host, port=config.pg_port, user=config.pg_user,
            password=config.pg_password or None, dbname=dbname, connect_timeout=10,
        )  # fmt: skip
    except psycopg2.OperationalError as exc:
        raise ScaleError(
            f"cannot reach Postgres at {config.pg_host}:{config.pg_port} as {config.pg_user!r}: "
            f"{str(exc).strip()} (start it, or set RECOPS_SCALE_PG_HOST/PORT/USER/PASSWORD)"
        ) from exc


def ensure_databases(config: ScaleConfig) -> list[str]:
    """Create the profile's databases that do not exist yet; return all their names."""
    names = [config.database(s) for s in _DB_SUFFIXES]
    con = _pg_connect(config)
    con.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with con.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    # The name is validated in ScaleConfig.from_env (letters, digits, _).
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    return names


def drop_databases(config: ScaleConfig) -> list[str]:
    """Drop the profile's databases and flush its Redis databases (``scale down --purge``)."""
    names = [config.database(s) for s in _DB_SUFFIXES]
    con = _pg_connect(config)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        con.close()
    import redis

    for db in (config.broker_db, config.feast_db):
        redis.Redis(host=config.redis_host, port=config.redis_port, db=db).flushdb()
    return names


def check_redis(config: ScaleConfig) -> None:
    """Raise :class:`ScaleError` naming the address when Redis does not answer."""
    import redis

    try:
        redis.Redis(host=config.redis_host, port=config.redis_port, socket_timeout=5).ping()
    except redis.RedisError as exc:
        raise ScaleError(
            f"cannot reach Redis at {config.redis_host}:{config.redis_port}: {exc} "
            "(start it, or set RECOPS_SCALE_REDIS_HOST/PORT)"
        ) from exc


# --- processes ------------------------------------------------------------------------------


def _pid_path(config: ScaleConfig, service: str) -> Path:
    return config.state_dir / "pids" / f"{service}.pid"


def _log_path(config: ScaleConfig, service: str) -> Path:
    return config.state_dir / "logs" / f"{service}.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def running(config: ScaleConfig) -> dict[str, int]:
    """Service -> pid of the services whose pid file names a live process."""
    out = {}
    for service in SERVICES:
        path = _pid_path(config, service)
        try:
            pid = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
        if _alive(pid):
            out[service] = pid
    return out


def _command(config: ScaleConfig, service: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    airflow = str(bin_dir / "airflow")
    if service == "mlflow":
        return [
            str(bin_dir / "mlflow"), "server",
            "--backend-store-uri", config.pg_url("mlflow"),
            "--serve-artifacts",
            "--artifacts-destination", (config.home / "mlflow" / "artifacts").as_uri(),
            "--host", "127.0.0.1", "--port", str(config.mlflow_port),
            "--workers", "1",
            "--app-name", "basic-auth",
        ]  # fmt: skip
    if service == "worker":
        return [airflow, "celery", "worker", "--queues", ",".join(WORKER_QUEUES),
                "--concurrency", str(config.worker_concurrency), "--skip-serve-logs"]  # fmt: skip
    return [airflow, service]


def _write_auth_config(config: ScaleConfig) -> Path:
    # MLflow's basic-auth app reads its settings from this ini; the admin password comes
    # from MLFLOW_AUTH_ADMIN_PASSWORD (in the environment, never in the file).
    path = config.state_dir / "mlflow_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {config.pg_url('mlflow_auth')}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _airflow_cli(env: Mapping[str, str], *args: str, timeout: int = 600) -> None:
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "airflow"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise ScaleError(
            f"`airflow {' '.join(args)}` failed:\n{(done.stdout + done.stderr)[-3000:]}"
        )


def _get(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> int:
    import httpx

    try:
        return httpx.get(url, auth=auth, timeout=timeout).status_code
    except httpx.HTTPError:
        return 0


def _wait_for(what: str, check: Any, timeout: float, config: ScaleConfig, service: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        pid = running(config).get(service)
        if pid is None:
            tail = _tail(_log_path(config, service))
            raise ScaleError(f"{service} exited while waiting for {what}; its log ends:\n{tail}")
        time.sleep(1)
    raise ScaleError(
        f"timed out after {timeout:.0f} s waiting for {what}; see {_log_path(config, service)}"
    )


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return "(no log)"


def up(config: ScaleConfig, *, timeout: float = 300.0) -> ScaleStatus:
    """Start the stack (idempotent: services already running are left alone).

    Args:
        config: The scale settings.
        timeout: Seconds to wait for each service to answer.

    Returns:
        What runs and where.

    Raises:
        ScaleError: Postgres or Redis is unreachable, or a service failed to start (the
            message ends with its log).
    """
    check_redis(config)
    databases = ensure_databases(config)
    secret_values = load_secrets(config, create=True)
    env = stack_env(config, secret_values)
    (config.state_dir / "pids").mkdir(parents=True, exist_ok=True)
    (config.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    already = running(config)
    if "scheduler" not in already:
        _airflow_cli(env, "db", "migrate")
        # recsys_promote's promote task runs in this 1-slot pool: one promotion at a time.
        _airflow_cli(env, "pools", "set", "recops_promotion", "1", "one promotion at a time")
    mlflow_env = {
        **env,
        "MLFLOW_AUTH_CONFIG_PATH": str(_write_auth_config(config)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret_values["MLFLOW_TRACKING_PASSWORD"],
    }
    for service in SERVICES:
        if service in already:
            continue
        log = _log_path(config, service).open("ab")
        try:
            proc = subprocess.Popen(
                _command(config, service),
                env=mlflow_env if service == "mlflow" else env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=str(config.home),
            )  # fmt: skip
        finally:
            log.close()
        tmp = _pid_path(config, service).with_suffix(".tmp")
        tmp.write_text(str(proc.pid))
        tmp.replace(_pid_path(config, service))
        if service == "mlflow":
            # 401 without credentials is the sign the basic-auth app is up.
            _wait_for("the MLflow server", lambda: _get(f"{config.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1") == 401,
                      timeout, config, service)  # fmt: skip
        if service == "api-server":
            _wait_for("the Airflow API server", lambda: _get(f"{config.api_url}/api/v2/monitor/health") == 200,
                      timeout, config, service)  # fmt: skip
    _wait_for(
        "the Celery worker",
        lambda: b" ready." in _log_path(config, "worker").read_bytes(),
        timeout,
        config,
        "worker",
    )
    return status(config, databases)


def down(config: ScaleConfig, *, purge: bool = False, timeout: float = 60.0) -> list[str]:
    """Stop the stack's processes (SIGTERM, then SIGKILL after ``timeout``).

    Args:
        config: The scale settings.
        purge: Also drop the profile's databases, flush its Redis databases and remove
            its state folder.
        timeout: Seconds to wait for a graceful stop.

    Returns:
        The services that were stopped.
    """
    stopped = []
    pids = running(config)
    # Workers first, so no task is cut off by its API going away before it ends.
    for service in reversed(SERVICES):
        pid = pids.get(service)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(service)
    deadline = time.monotonic() + timeout
    for service in stopped:
        pid = pids[service]
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for service in SERVICES:
        _pid_path(config, service).unlink(missing_ok=True)
    if purge:
        drop_databases(config)
        import shutil

        shutil.rmtree(config.home, ignore_errors=True)
    return stopped


def status(config: ScaleConfig, databases: list[str] | None = None) -> ScaleStatus:
    """Which services run, and where they answer."""
    live = running(config)
    return ScaleStatus(
        running=live,
        stopped=[s for s in SERVICES if s not in live],
        airflow_url=config.api_url,
        mlflow_url=config.mlflow_url,
        logs=str(config.state_dir / "logs"),
        databases=databases
        if databases is not None
        else [config.database(s) for s in _DB_SUFFIXES],
    )


# --- the Airflow REST API -------------------------------------------------------------------


class AirflowApi:
    """A small client of Airflow 3's public REST API (``/api/v2``), as the UI uses it.

    Args:
        base_url: The API server, e.g. ``http://127.0.0.1:8180``.
        username: Airflow user.
        password: Its password.
    """

    def __init__(self, base_url: str, username: str, password: str) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        reply = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": password},
            timeout=30,
        )
        if reply.status_code not in (200, 201):
            raise ScaleError(
                f"login as {username!r} at {self.base_url} failed: HTTP {reply.status_code} {reply.text[:200]}"
            )
        self._client = httpx.Client(
            base_url=f"{self.base_url}/api/v2",
            headers={"Authorization": f"Bearer {reply.json()['access_token']}"},
            timeout=60,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; raises :class:`ScaleError` with the reply on a non-2xx status."""
        reply = self._client.request(method, path, **kwargs)
        if reply.status_code >= 300:
            raise ScaleError(f"{method} {path}: HTTP {reply.status_code} {reply.text[:500]}")
        return reply.json() if reply.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 300.0) -> None:
        """Wait until the DAG processor has parsed ``dag_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._client.get(f"/dags/{dag_id}")
            if reply.status_code == 200:
                return
            if reply.status_code not in (404,):
                raise ScaleError(f"GET /dags/{dag_id}: HTTP {reply.status_code} {reply.text[:300]}")
            time.sleep(2)
        raise ScaleError(
            f"{dag_id} was not parsed within {timeout:.0f} s (see the dag-processor log)"
        )

    def trigger(
        self, dag_id: str, logical_date: str, conf: Mapping[str, Any], *, unpause: bool = True
    ) -> str:
        """Trigger a run as the UI does; returns its run id.

        Args:
            dag_id: The DAG.
            logical_date: ISO date or datetime (UTC) of the run.
            conf: The run's Params.
            unpause: Unpause the DAG first (new DAGs start paused).
        """
        if unpause:
            self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        when = logical_date if "T" in logical_date else f"{logical_date}T00:00:00Z"
        run = self.request(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": when, "conf": dict(conf)}
        )
        return str(run["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 1800.0) -> dict[str, Any]:
        """Poll a run until it succeeds or fails; returns the run and its task instances."""
        from urllib.parse import quote

        import httpx

        deadline = time.monotonic() + timeout
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
        while time.monotonic() < deadline:
            try:
                run = self.request("GET", path)
            except httpx.TransportError:
                # A busy API server (a task near the machine's memory limit) may miss one
                # poll; the run goes on, so keep watching it until the deadline.
                time.sleep(3)
                continue
            if run["state"] in ("success", "failed"):
                tis = self.request("GET", f"{path}/taskInstances", params={"limit": 100})
                return {"run": run, "task_instances": tis["task_instances"]}
            time.sleep(3)
        raise ScaleError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f} s")
