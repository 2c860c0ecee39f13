"""``recops ui``: Airflow (standalone), the MLflow and Feast UIs and serving, side by side."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from recops.cli.common import PORT_HINT, fail, load_settings, require_free_port
from recops.cli.dag_runs import ensure_airflow_db
from recops.config import airflow_env

__all__ = ["UI_HELP", "ui"]


#: The command's help, on one line in `recops --help` (a wrapped docstring would not be).
UI_HELP = (
    "Start Airflow (standalone), the MLflow and Feast UIs and serving; print URLs and the login."
)


def ui() -> None:
    """Start Airflow (standalone), the MLflow and Feast UIs and serving; print the URLs.

    Also prints the Airflow login; Ctrl-C stops all but serving (``UI_HELP`` is the help).
    """
    from recops.features import feast_ui_command

    settings = load_settings()
    airflow_port = int(os.environ.get("AIRFLOW__API__PORT") or 8080)
    mlflow_port = int(os.environ.get("RECOPS_MLFLOW_PORT") or 5000)
    feast_port = int(os.environ.get("RECOPS_FEAST_UI_PORT") or 8888)
    require_free_port("127.0.0.1", airflow_port, "AIRFLOW__API__PORT")
    require_free_port("127.0.0.1", mlflow_port, "RECOPS_MLFLOW_PORT")
    require_free_port("127.0.0.1", feast_port, "RECOPS_FEAST_UI_PORT")
    try:
        feast_argv, feast_env = feast_ui_command(settings, feast_port)
    except FileNotFoundError as exc:
        # Airflow and MLflow are still worth opening before the first run.
        feast_argv, feast_note = [], str(exc)
    else:
        feast_note = f"http://127.0.0.1:{feast_port}"
    settings.ensure_dirs()
    ensure_airflow_db(settings)
    from recops.serving import server

    try:
        server.start_background(settings)
    except RuntimeError as exc:
        fail(str(exc), f"{PORT_HINT}; the server log is {settings.serving_dir / 'server.log'}")
    from recops.errors import ParamError
    from recops.service.daemon import log_file, service_url, start_service

    try:
        start_service(settings)
    except ParamError as exc:  # the scale profile without its events token
        fail(str(exc), "set RECOPS_EVENTS_TOKEN (`make compose-env` generates one)")
    except RuntimeError as exc:
        fail(str(exc), f"free RECOPS_RECOMMEND_PORT; the service log is {log_file(settings)}")
    bin_dir = Path(sys.executable).parent
    # `airflow standalone` starts its components as `airflow ...` from PATH.
    env = {
        **os.environ,
        **airflow_env(settings),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    procs = [
        subprocess.Popen([str(bin_dir / "airflow"), "standalone"], env=env),
        subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "ui",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
            ],
            env=env,
        ),  # fmt: skip
    ]
    if feast_argv:
        procs.append(subprocess.Popen(feast_argv, env={**env, **feast_env}))
    password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 120
    while not password_file.exists() and time.monotonic() < deadline:
        time.sleep(1)
    login = (
        password_file.read_text().strip()
        if password_file.exists()
        else "(see the airflow standalone output)"
    )
    typer.echo("")
    typer.echo(f"Airflow  http://127.0.0.1:{airflow_port}   login {login}")
    typer.echo(f"MLflow   http://127.0.0.1:{mlflow_port}")
    typer.echo(f"Feast    {feast_note}")
    typer.echo(
        f"Serving  http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}"
    )
    typer.echo(f"Recommend {service_url(settings)}/v1/recommendations?user_id=1")
    typer.echo(
        "Ctrl-C stops Airflow, MLflow and Feast "
        "(`recops stop` and `recops service stop` stop serving)."
    )
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
