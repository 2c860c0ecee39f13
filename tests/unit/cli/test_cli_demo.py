"""``recops demo``: every argument is checked before anything is written."""

from __future__ import annotations

from pathlib import Path

from recops.cli import app
from typer.testing import CliRunner


def test_demo_rejects_bad_conf_before_writing_anything(empty_home: Path) -> None:
    broken = CliRunner().invoke(app, ["demo", "--conf", "{bad"])
    typo = CliRunner().invoke(app, ["demo", "--conf", '{"epoch": 2}'])
    not_object = CliRunner().invoke(app, ["demo", "--conf", "[2]"])
    out_of_range = CliRunner().invoke(app, ["demo", "--conf", '{"epochs": 0}'])

    assert broken.exit_code == 1
    assert "--conf is not valid JSON" in broken.stderr
    assert "line 1 column 2" in broken.stderr  # where the problem is
    assert typo.exit_code == 1 and "unknown params" in typo.stderr and "'epoch'" in typo.stderr
    assert "'epochs'" in typo.stderr  # the message lists the real Params
    assert not_object.exit_code == 1 and "must be a JSON object" in not_object.stderr
    assert out_of_range.exit_code == 1 and "param 'epochs'" in out_of_range.stderr
    assert not empty_home.exists()
