"""``recops.cli.common``: a bad environment is an error with a hint, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from recops.cli import app
from typer.testing import CliRunner


def test_bad_environment_is_an_error_with_a_hint(
    empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_PROFILE", "cluster")

    out = CliRunner().invoke(app, ["status"])

    assert out.exit_code == 1
    assert "RECOPS_PROFILE='cluster'" in out.stderr and "hint:" in out.stderr
