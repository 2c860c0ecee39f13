"""What every ``recops`` command shares: errors with a hint, settings, progress bars, ports.

Progress bars (``rich``) go to stderr, and only when stderr is a terminal and ``--json``
is not given, so stdout stays clean for scripts. Leaf of ``recops.cli``: the command
modules import it, it imports none of them.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from recops.config import Settings

__all__ = [
    "FIRST_RUN_HINT",
    "NO_MODEL_HINT",
    "PORT_HINT",
    "FlagHelpCommand",
    "FlagHelpGroup",
    "JsonOption",
    "StepReporter",
    "dataset_settings_or_exit",
    "fail",
    "load_settings",
    "local_sqlite_missing",
    "progress_enabled",
    "require_free_port",
    "step_bars",
]

#: Next step for a home with no state yet.
FIRST_RUN_HINT = "run `make demo` (or `recops demo`) to ingest data, train and serve a model"
NO_MODEL_HINT = (
    "run `make demo`, or trigger recsys_promote in the Airflow UI (`make ui`) for a blessed version"
)
PORT_HINT = (
    "free the port, or pick others with RECOPS_REST_PORT / RECOPS_GRPC_PORT (or `recops stop`)"
)
#: A step reporter ``(step, done, total)``; the same shape as ``recops.data.ProgressCallback``.
StepReporter = Callable[[str, int, int | None], None]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only (no progress bars).")]


def _show_flags_as_flags(command: Any, ctx: Any) -> None:
    """Give every flag of ``command`` (``--help`` included) an empty metavar.

    Typer's rich help prints a flag's type, so ``--json`` read as ``--json <bool>``: as if
    it took a value. An empty metavar leaves just the flag, as click's plain help has it.
    """
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class FlagHelpCommand(TyperCommand):
    """A command whose help shows boolean options as flags: ``--json``, not ``--json <bool>``."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _show_flags_as_flags(self, ctx)
        super().format_help(ctx, formatter)


class FlagHelpGroup(TyperGroup):
    """A command group whose help shows boolean options as bare flags (see FlagHelpCommand)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _show_flags_as_flags(self, ctx)
        super().format_help(ctx, formatter)


def fail(message: str, hint: str) -> NoReturn:
    """Print ``error: message`` and ``hint: hint`` on stderr and exit with code 1."""
    # Every error names the next thing to do; a bare traceback is a bug in this package.
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code=1)


def load_settings() -> Settings:
    """``Settings.from_env()``, or an error naming the bad variable."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        fail(str(exc), "fix or unset that environment variable (.env.example lists them all)")


def progress_enabled(as_json: bool) -> bool:
    """Whether to draw progress bars."""
    # Bars are for people at a terminal; pipes, CI logs and --json get none.
    return not as_json and sys.stderr.isatty()


@contextmanager
def step_bars(enabled: bool) -> Iterator[StepReporter | None]:
    """One progress bar per step name, on stderr; yields None (report nothing) when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    bars: dict[str, TaskID] = {}
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=Console(stderr=True),
    ) as progress:  # fmt: skip

        def report(step: str, done: int, total: int | None) -> None:
            if step not in bars:
                bars[step] = progress.add_task(step, total=total)
            progress.update(bars[step], completed=done, total=total)

        yield report


def local_sqlite_missing(uri: str) -> bool:
    """Whether ``uri`` names an embedded-profile SQLite database that was never created."""
    # There is nothing to read then, and opening it would create (and migrate) an empty
    # one just to say so.
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def require_free_port(host: str, port: int, variable: str) -> None:
    """Exit with a hint naming ``variable`` when ``port`` on ``host`` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            fail(
                f"port {port} on {host} is already in use",
                f"stop what holds it, or set {variable} to a free port",
            )


def dataset_settings_or_exit(settings: Settings, dataset: str) -> Settings:
    """``settings`` for ``dataset``, or a clear exit naming the datasets present."""
    from recops.layout import known_datasets

    known = known_datasets(settings)
    if dataset not in known:
        fail(
            f"--dataset {dataset!r} is not a dataset here (known: {', '.join(known) or 'none'})",
            "import it first: `recops data import --spec spec.yaml`",
        )
    return settings.for_dataset(dataset)
