"""The ``recops`` Typer app: every command and command group, mounted in help order.

Heavy libraries are imported inside each command, so ``recops --help`` answers at once.
With ``--json`` a command prints JSON only on stdout; bars and messages go to stderr.
"""

from __future__ import annotations

import typer

from recops.cli.bench import bench
from recops.cli.common import FlagHelpCommand, FlagHelpGroup
from recops.cli.data import data_app
from recops.cli.demo import demo
from recops.cli.feed import feed
from recops.cli.run import run
from recops.cli.scale import scale_app
from recops.cli.serving import history, recommend, rollback, serve, status, stop
from recops.cli.ui import UI_HELP, ui
from recops.service.cli import service_app

__all__ = ["app", "main"]

app = typer.Typer(
    help="recops: MLOps for search and recommendation models.",
    no_args_is_help=True,
    add_completion=False,
    cls=FlagHelpGroup,
)
app.add_typer(data_app, name="data")
app.add_typer(scale_app, name="scale")
app.add_typer(service_app, name="service")
# Registration order is the order `recops --help` lists the commands in.
app.command(cls=FlagHelpCommand)(demo)
app.command(cls=FlagHelpCommand)(run)
app.command(cls=FlagHelpCommand)(recommend)
app.command(cls=FlagHelpCommand)(status)
app.command(cls=FlagHelpCommand)(history)
app.command(cls=FlagHelpCommand)(rollback)
app.command(cls=FlagHelpCommand)(serve)
app.command(cls=FlagHelpCommand)(stop)
app.command(help=UI_HELP, cls=FlagHelpCommand)(ui)
app.command(cls=FlagHelpCommand)(bench)
app.command(cls=FlagHelpCommand)(feed)


def main() -> None:
    """Entry point of the ``recops`` console script."""
    app()
