"""``recops ui``: Airflow (standalone), the MLflow and Feast UIs and serving, side by side.

Each UI's output goes to its own log under ``RECOPS_HOME/logs`` (``ui-airflow.log``...).
"ready" is printed only once every UI answers, with the seconds each one took
(``wait_until_ready``); a UI that does not come up in time is named with its log.
Airflow runs right-sized for the machine and bound to loopback
(``recops.config.airflow_env``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import typer

from recops.cli.common import PORT_HINT, fail, load_settings, require_free_port
from recops.cli.dag_runs import ensure_airflow_db
from recops.config import Settings, airflow_env, embedded_parallelism

__all__ = ["UI_HELP", "Probe", "http_answers", "ui", "wait_until_ready"]


#: The command's help, on one line in `recops --help` (a wrapped docstring would not be).
UI_HELP = (
    "Start Airflow (standalone), the MLflow and Feast UIs and serving; print URLs and the login."
)
#: Seconds each UI gets to answer once started (Airflow migrates, parses the DAGs and
#: starts four components: 84 s on an idle 2-core machine, three minutes on a busy one;
#: MLflow's UI workers took 70 s there).
AIRFLOW_READY_S = 420.0
OTHER_READY_S = 300.0


def http_answers(url: str, *, ok_only: bool = False, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers HTTP: any status (a 404 is an answer), or 2xx with ``ok_only``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return bool(200 <= reply.status < 300)
    except urllib.error.HTTPError as exc:
        exc.close()
        return not ok_only and exc.code < 500
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Probe:
    """One UI to wait for.

    Attributes:
        name: What the user calls it ("Airflow", "MLflow"...).
        url: What to print for the user.
        answers: True once the UI answers.
        log: Where its output goes, named when it does not come up.
        timeout_s: How long it may take.
        proc: Its process when ``recops ui`` started it (a dead one is not waited for).
    """

    name: str
    url: str
    answers: Callable[[], bool]
    log: Path
    timeout_s: float = OTHER_READY_S
    proc: subprocess.Popen[bytes] | None = None


def wait_until_ready(
    probes: Sequence[Probe],
    *,
    started: float | None = None,
    poll_s: float = 1.0,
    echo: Callable[[str], None] = typer.echo,
) -> dict[str, float | None]:
    """Poll every probe until each answers, dies or runs out of time; report each as it goes.

    Each probe's ``timeout_s`` counts from this call; the times reported count from
    ``started`` (when ``recops ui`` began), which is what the user waited.

    Returns:
        Seconds (from ``started``) each UI took to answer, None for one that did not.
    """
    waiting_since = time.monotonic()
    t0 = started if started is not None else waiting_since
    took: dict[str, float | None] = {}
    pending = list(probes)
    while pending:
        now = time.monotonic()
        elapsed = now - t0
        for probe in list(pending):
            if probe.answers():
                took[probe.name] = elapsed
                echo(f"ready  {probe.name:<9} {probe.url}  ({elapsed:.0f} s)")
            elif probe.proc is not None and probe.proc.poll() is not None:
                took[probe.name] = None
                echo(
                    f"FAILED {probe.name:<9} exited with {probe.proc.returncode}; "
                    f"its log: {probe.log}"
                )
            elif now - waiting_since > probe.timeout_s:
                took[probe.name] = None
                echo(
                    f"FAILED {probe.name:<9} no answer at {probe.url} in {probe.timeout_s:.0f} s; "
                    f"its log: {probe.log}"
                )
            else:
                continue
            pending.remove(probe)
        if pending:
            time.sleep(poll_s)
    return took


def _start(
    argv: list[str], env: dict[str, str], log: Path, opened: list[IO[bytes]]
) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    opened.append(handle)
    return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)


def ui() -> None:
    """Start Airflow (standalone), the MLflow and Feast UIs and serving; print the URLs.

    Also prints the Airflow login; Ctrl-C stops all but serving (``UI_HELP`` is the help).
    """
    from recops.features import feast_ui_command

    started = time.monotonic()
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
        feast_argv, feast_env, feast_note = [], {}, str(exc)
    else:
        feast_note = ""
    settings.ensure_dirs()
    ensure_airflow_db(settings)
    from recops.service.daemon import log_file, service_answers, service_url

    bin_dir = Path(sys.executable).parent
    # `airflow standalone` starts its components as `airflow ...` from PATH.
    env = {
        **os.environ,
        **airflow_env(settings),
        "AIRFLOW__API__PORT": str(airflow_port),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    opened: list[IO[bytes]] = []
    airflow_url = f"http://127.0.0.1:{airflow_port}"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    airflow_proc = _start(
        [str(bin_dir / "airflow"), "standalone"], env, logs / "ui-airflow.log", opened
    )
    mlflow_proc = _start(
        [
            str(bin_dir / "mlflow"), "ui", "--backend-store-uri", settings.mlflow_tracking_uri,
            "--host", "127.0.0.1", "--port", str(mlflow_port),
            # One UI user: MLflow's default of 4 workers, each importing MLflow, took
            # 70 s to come up on 2 busy cores.
            "--workers", str(max(1, embedded_parallelism() // 2)),
        ],
        env, logs / "ui-mlflow.log", opened,
    )  # fmt: skip
    procs = [airflow_proc, mlflow_proc]
    rest = f"http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}"
    probes = [
        Probe(
            "Airflow", airflow_url,
            lambda: http_answers(f"{airflow_url}/api/v2/monitor/health", ok_only=True),
            logs / "ui-airflow.log", AIRFLOW_READY_S, airflow_proc,
        ),
        Probe(
            "MLflow", mlflow_url, lambda: http_answers(f"{mlflow_url}/health", ok_only=True),
            logs / "ui-mlflow.log", proc=mlflow_proc,
        ),
        Probe("Serving", rest, lambda: http_answers(rest), settings.serving_dir / "server.log"),
        Probe(
            "Recommend", f"{service_url(settings)}/v1/recommendations?user_id=1",
            lambda: service_answers(settings), log_file(settings),
        ),
    ]  # fmt: skip
    if feast_argv:
        feast_url = f"http://127.0.0.1:{feast_port}"
        feast_proc = _start(feast_argv, {**env, **feast_env}, logs / "ui-feast.log", opened)
        procs.append(feast_proc)
        probes.insert(
            2,
            Probe(
                "Feast", feast_url, lambda: http_answers(feast_url), logs / "ui-feast.log",
                proc=feast_proc,
            ),
        )  # fmt: skip
    typer.echo(f"Starting the UIs (their logs: {logs}/ui-*.log) ...")
    if feast_note:
        typer.echo(f"Feast UI not started: {feast_note}")
    # Serving starts while the UIs (the slow ones) come up; a refusal stops them again.
    try:
        _start_serving(settings)
    except typer.Exit:
        _stop(procs, opened)
        raise
    took = wait_until_ready(probes, started=started)
    password_file = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    login = (
        password_file.read_text().strip()
        if password_file.exists()
        else f"(see {logs / 'ui-airflow.log'})"
    )
    failed = [name for name, seconds in took.items() if seconds is None]
    typer.echo("")
    typer.echo(f"Airflow login {login}")
    if failed:
        typer.echo(f"not ready: {', '.join(failed)} (see their logs above)")
    else:
        typer.echo(f"ready: every UI answers ({time.monotonic() - started:.0f} s)")
    typer.echo(
        "Unpausing recsys_nightly runs yesterday's data once it has arrived (keep "
        "`recops feed` posting events); a day without data is skipped, not failed."
    )
    typer.echo(
        "Ctrl-C stops Airflow, MLflow and Feast "
        "(`recops stop` and `recops service stop` stop serving)."
    )
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        _stop(procs, opened)
    finally:
        for handle in opened:
            handle.close()


def _stop(procs: list[subprocess.Popen[bytes]], opened: list[IO[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for handle in opened:
        handle.close()


def _start_serving(settings: Settings) -> None:
    """The model server and the recommendation service, in the background (they outlive us)."""
    from recops.errors import ParamError
    from recops.service.daemon import log_file, start_service
    from recops.serving import server

    try:
        server.start_background(settings)
    except RuntimeError as exc:
        fail(str(exc), f"{PORT_HINT}; the server log is {settings.serving_dir / 'server.log'}")
    try:
        start_service(settings)
    except ParamError as exc:  # the scale profile without its events token
        fail(str(exc), "set RECOPS_EVENTS_TOKEN (`make compose-env` generates one)")
    except RuntimeError as exc:
        fail(str(exc), f"free RECOPS_RECOMMEND_PORT; the service log is {log_file(settings)}")
