"""``recops.cli.app``: every required command is mounted, and the package's public surface."""

from __future__ import annotations

import re

import recops.cli
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
