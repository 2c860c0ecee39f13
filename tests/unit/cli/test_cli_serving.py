"""``recops status|history|rollback|recommend`` as a newcomer meets them: an empty home.

Commands run for real in Typer's runner; nothing here trains a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recops.cli import app
from recops.config import Settings
from typer.testing import CliRunner


def test_status_json_on_an_empty_home_says_nothing_is_there(empty_home: Path) -> None:
    out = CliRunner().invoke(app, ["status", "--json"])

    assert out.exit_code == 0, out.output
    status = json.loads(out.stdout)
    assert status["home"] == str(empty_home)
    assert not any(status["state"][k] for k in ("data", "airflow_db", "registry", "served"))
    assert status["registry"]["versions"] == [] and status["serving"]["up"] is False
    assert "make demo" in status["next_step"]
    # Reading the status must not create state (an empty MLflow DB, folders) as a side effect.
    assert not empty_home.exists()


def test_history_and_rollback_on_an_empty_home(empty_home: Path) -> None:
    history = CliRunner().invoke(app, ["history", "--json"])
    rollback = CliRunner().invoke(app, ["rollback"])

    assert history.exit_code == 0 and json.loads(history.stdout) == []
    assert rollback.exit_code == 1
    assert "nothing to roll back" in rollback.stderr and "hint: run `make demo`" in rollback.stderr


def test_recommend_without_data_points_at_the_data_commands(empty_home: Path) -> None:
    out = CliRunner().invoke(app, ["recommend", "--user-id", "1"])

    assert out.exit_code == 1
    assert "no published data" in out.stderr
    assert "recops data import --spec" in out.stderr and "make demo" in out.stderr
    assert "Traceback" not in out.output


def test_recommend_with_no_served_model_says_what_to_run(
    synth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The home has data (landed here when this module's home is still empty) but nothing
    # was trained or served.
    monkeypatch.setenv("RECOPS_HOME", str(synth_home))
    if not Settings.from_env().items_path.is_file():  # this test run alone
        assert CliRunner().invoke(app, ["data", "synth", "--rows", "500"]).exit_code == 0

    out = CliRunner().invoke(app, ["recommend", "--user-id", "1", "--json"])

    assert out.exit_code == 1
    assert out.stdout == ""  # --json: nothing but JSON on stdout, and there is none to give
    assert "recops_retrieval version is served" in out.stderr
    assert "make demo" in out.stderr and "recsys_promote" in out.stderr
