"""``recops service start|stop|status``: the recommendation service from the command line."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from recops.cli.common import FlagHelpCommand, FlagHelpGroup, fail, load_settings

__all__ = ["service_app"]

service_app = typer.Typer(
    cls=FlagHelpGroup,
    help="The recommendation service (HTTP): start, stop, status.",
    no_args_is_help=True,
)


@service_app.command(cls=FlagHelpCommand)
def start(
    detach: Annotated[
        bool, typer.Option(help="Run in the background (pidfile and log under RECOPS_HOME).")
    ] = False,
) -> None:
    """Serve GET /v1/recommendations, POST /v1/events, /healthz and /metrics."""
    from recops.errors import ParamError, UnavailableError
    from recops.service.daemon import log_file, service_url, start_service
    from recops.service.server import check_profile

    settings = load_settings()
    try:
        check_profile(settings)
    except ParamError as exc:
        fail(str(exc).split("; hint:")[0], "set RECOPS_EVENTS_TOKEN (make compose-env writes one)")
    if detach:
        try:
            pid = start_service(settings)
        except UnavailableError as exc:
            fail(str(exc), f"free RECOPS_RECOMMEND_PORT; the log is {log_file(settings)}")
        typer.echo(f"recommendation service in the background, pid {pid}: {service_url(settings)}")
        return
    from recops.cli.common import require_free_port
    from recops.service.server import main

    require_free_port(settings.recommend_host, settings.recommend_port, "RECOPS_RECOMMEND_PORT")
    main([])


@service_app.command(cls=FlagHelpCommand)
def stop() -> None:
    """Stop the background recommendation service."""
    from recops.service.daemon import stop_service

    typer.echo("stopped" if stop_service(load_settings()) else "no background service was running")


@service_app.command(cls=FlagHelpCommand)
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Whether the service answers, its health and the model versions it serves."""
    from recops.service.daemon import health, service_url

    settings = load_settings()
    found = health(settings)
    data = {"url": service_url(settings), "up": found is not None, "health": found}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"service  {data['url']}  {'up' if found else 'down'}")
    if found:
        typer.echo(f"health   {json.dumps(found)}")
