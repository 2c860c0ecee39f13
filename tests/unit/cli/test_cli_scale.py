"""``recops scale``: commands that need a running stack say so, with a hint, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from recops.cli import app
from typer.testing import CliRunner


@pytest.fixture
def scale_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "scale"
    monkeypatch.setenv("RECOPS_SCALE_HOME", str(home))
    return home


def test_env_before_up_points_at_scale_up(scale_home: Path) -> None:
    out = CliRunner().invoke(app, ["scale", "env"])

    assert out.exit_code == 1
    assert "secrets.env is missing" in out.stderr
    assert "hint: run `recops scale up` first" in out.stderr
    assert not scale_home.exists()


def test_status_of_a_stack_never_started_lists_every_service_down(scale_home: Path) -> None:
    out = CliRunner().invoke(app, ["scale", "status", "--json"])

    assert out.exit_code == 0, out.output
    assert '"running": {}' in out.stdout and '"api-server"' in out.stdout


def test_trigger_rejects_conf_that_is_not_json(scale_home: Path) -> None:
    out = CliRunner().invoke(
        app, ["scale", "trigger", "--logical-date", "1998-04-23", "--conf", "{bad"]
    )

    assert out.exit_code == 1
    assert "error: --conf is not JSON" in out.stderr and "hint: pass an object" in out.stderr
