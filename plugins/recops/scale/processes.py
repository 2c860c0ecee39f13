"""The stack's processes: start them in order, wait until each answers, stop them.

Each service runs in its own session with a pid file and a log under ``<home>/scale/``;
``up`` is idempotent (what already runs is left alone) and ``down`` stops the workers
first, with SIGTERM and then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from recops.config import PROMOTION_POOL
from recops.errors import ScaleError
from recops.io import atomic_write_text
from recops.scale.backends import check_redis, drop_databases, ensure_databases
from recops.scale.config import DB_SUFFIXES, SERVICES, WORKER_QUEUES, ScaleConfig, ScaleStatus
from recops.scale.credentials import load_secrets
from recops.scale.environment import stack_env

__all__ = ["down", "running", "status", "up"]


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
    atomic_write_text(path, text)
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


def _mlflow_up(config: ScaleConfig) -> bool:
    # 401 without credentials is the sign the basic-auth app is up.
    search = f"{config.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    return _get(search) == 401


def _api_up(config: ScaleConfig) -> bool:
    return _get(f"{config.api_url}/api/v2/monitor/health") == 200


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, config: ScaleConfig, service: str
) -> None:
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
        _airflow_cli(env, "pools", "set", PROMOTION_POOL, "1", "one promotion at a time")
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
        atomic_write_text(_pid_path(config, service), str(proc.pid))
        if service == "mlflow":
            _wait_for("the MLflow server", lambda: _mlflow_up(config), timeout, config, service)
        if service == "api-server":
            _wait_for("the Airflow API server", lambda: _api_up(config), timeout, config, service)
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
        databases=databases if databases is not None else [config.database(s) for s in DB_SUFFIXES],
    )
