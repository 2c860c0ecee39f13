"""``recops run``: every argument is checked before anything runs."""

from __future__ import annotations

from pathlib import Path

from recops.cli import app
from typer.testing import CliRunner


def test_run_refuses_an_unknown_dataset_naming_the_known_ones(empty_home: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--dataset", "nope"])

    assert result.exit_code == 1
    assert "--dataset 'nope' is not a dataset here" in result.stderr
    assert "known: movielens-100k" in result.stderr and "recops data import" in result.stderr
    assert not empty_home.exists()


def test_run_refuses_a_conf_that_names_another_dataset(empty_home: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", "--dataset", "shop-synthetic", "--conf", '{"dataset": "movielens-100k"}']
    )

    assert result.exit_code == 1 and "name the dataset once" in result.stderr
    assert not empty_home.exists()


def test_run_on_a_dataset_without_data_says_how_to_land_it(empty_home: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--dataset", "movielens-100k", "--date", "bad"])
    assert result.exit_code == 1 and "--date 'bad' is not a YYYY-MM-DD day" in result.stderr

    result = CliRunner().invoke(app, ["run", "--dataset", "movielens-100k"])
    assert result.exit_code == 1
    assert "has no data" in result.stderr and "recops data import --spec" in result.stderr
