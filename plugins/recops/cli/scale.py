"""``recops scale up|down|status|env|trigger``: the scale-out profile on this machine.

Mounted by ``recops.cli.app`` as the ``scale`` command group; the work itself is in
``recops.scale``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from recops.cli.common import FlagHelpCommand, FlagHelpGroup, fail
from recops.errors import ScaleError
from recops.scale import (
    AirflowApi,
    ScaleConfig,
    airflow_password,
    client_env,
    down,
    status,
    up,
)

__all__ = ["scale_app"]

scale_app = typer.Typer(
    cls=FlagHelpGroup,
    help="The scale-out profile: Airflow on Postgres + CeleryExecutor + Redis, an MLflow "
    "server with basic auth, Feast's SQL registry and Redis online store.",
    no_args_is_help=True,
)


@scale_app.command("up", cls=FlagHelpCommand)
def scale_up(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Start the stack against the local Postgres and Redis (idempotent)."""
    config = ScaleConfig.from_env()
    if not as_json:
        typer.echo(
            f"Starting the scale profile under {config.home} (databases {config.db_prefix}_*) ...",
            err=True,
        )
    try:
        result = up(config)
    except ScaleError as exc:
        fail(
            str(exc),
            "`recops scale down` stops what did start; logs are under "
            + str(config.state_dir / "logs"),
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"Airflow  {result.airflow_url}   login admin / {airflow_password(config)}")
    typer.echo(
        f"MLflow   {result.mlflow_url}   login admin / "
        f"(MLFLOW_TRACKING_PASSWORD in {config.secrets_path})"
    )
    typer.echo(f"logs     {result.logs}")
    typer.echo("`eval $(recops scale env)` points recops commands in this shell at the stack.")


@scale_app.command("down", cls=FlagHelpCommand)
def scale_down(
    purge: Annotated[
        bool, typer.Option(help="Also drop the profile's databases and state folder.")
    ] = False,
) -> None:
    """Stop the stack's processes."""
    config = ScaleConfig.from_env()
    try:
        stopped = down(config, purge=purge)
    except ScaleError as exc:
        fail(str(exc), "the processes are stopped; only the purge failed")
    typer.echo(
        f"stopped: {', '.join(stopped) or 'nothing was running'}" + ("; purged" if purge else "")
    )


@scale_app.command("status", cls=FlagHelpCommand)
def scale_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which of the stack's services run."""
    result = status(ScaleConfig.from_env())
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    for service, pid in result.running.items():
        typer.echo(f"  up    {service:<14} pid {pid}")
    for service in result.stopped:
        typer.echo(f"  down  {service}")


@scale_app.command("env", cls=FlagHelpCommand)
def scale_env() -> None:
    """Print `export` lines that point recops commands at the stack (contains secrets)."""
    import shlex

    try:
        values = client_env(ScaleConfig.from_env())
    except ScaleError as exc:
        fail(str(exc), "run `recops scale up` first")
    for name, value in values.items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@scale_app.command("trigger", cls=FlagHelpCommand)
def scale_trigger(
    logical_date: Annotated[
        str, typer.Option(help="Logical date (YYYY-MM-DD): the run processes the day before.")
    ],
    conf: Annotated[str, typer.Option(help="JSON DAG Params.")] = "{}",
    dag_id: Annotated[str, typer.Option(help="DAG to trigger.")] = "recsys_nightly",
    wait: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Trigger a DAG run through the Airflow REST API, as the UI does, and wait for it."""
    try:
        params = json.loads(conf)
    except json.JSONDecodeError as exc:
        fail(
            f"--conf is not JSON: {exc}",
            "pass an object, e.g. --conf '{\"epochs\": 2}'",
        )
    config = ScaleConfig.from_env()
    try:
        api = AirflowApi(config.api_url, "admin", airflow_password(config))
        api.wait_for_dag(dag_id)
        run_id = api.trigger(dag_id, logical_date, params)
        if not as_json:
            typer.echo(f"triggered {dag_id} run {run_id}", err=True)
        result = (
            api.wait_run(dag_id, run_id)
            if wait
            else {"run": {"dag_run_id": run_id, "state": "queued"}}
        )
        api.close()
    except ScaleError as exc:
        fail(
            str(exc),
            "`recops scale status` shows what runs; logs are under "
            + str(config.state_dir / "logs"),
        )
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(f"{dag_id} {run_id}: {result['run']['state']}")
    if result["run"]["state"] == "failed":
        raise typer.Exit(code=1)
