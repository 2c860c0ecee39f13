"""``recops.cli.app``: every required command is mounted, and the package's public surface."""

from __future__ import annotations

import re
from typing import Any

import recops.cli
import typer
from recops.cli import app
from typer.testing import CliRunner

REQUIRED = ("demo", "ui", "status", "recommend", "history", "rollback", "bench", "data")


def test_help_lists_every_required_command() -> None:
    top = CliRunner().invoke(app, ["--help"])
    data = CliRunner().invoke(app, ["data", "--help"])

    assert top.exit_code == 0 and data.exit_code == 0
    listed = set(re.findall(r"│ (\w+)\s", top.stdout))
    assert set(REQUIRED) <= listed, listed
    assert {"fetch", "synth", "import"} <= set(re.findall(r"│ (\w+)\s", data.stdout))


def test_public_surface_is_the_declared_one() -> None:
    assert sorted(recops.cli.__all__) == [
        "DagTestTracker",
        "app",
        "benchmark_plan",
        "dag_task_ids",
        "main",
    ]
    assert all(hasattr(recops.cli, name) for name in recops.cli.__all__)


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the click tree under ``command``, as argv prefixes."""
    out = [path]
    for name, sub in getattr(command, "commands", {}).items():
        out += _command_paths(sub, (*path, name))
    return out


def test_every_help_shows_boolean_options_as_flags() -> None:
    tree = typer.main.get_command(app)
    paths = _command_paths(tree)
    # Wide enough that no option wraps onto a second line.
    runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})

    assert len(paths) > 20  # the whole tree: commands, groups and their subcommands
    for path in paths:
        out = runner.invoke(app, [*path, "--help"])
        assert out.exit_code == 0, (path, out.output)
        assert "<bool>" not in out.stdout, (path, out.stdout)
        assert re.search(r"--help\s+Show this message", out.stdout), (path, out.stdout)
    history = runner.invoke(app, ["history", "--help"]).stdout
    assert re.search(r"--json\s+Print JSON", history), history
