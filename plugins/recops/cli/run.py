"""``recops run``: the nightly and the promotion for one imported dataset, as the demo does.

``recops data import --spec`` lands a dataset; ``recops run --dataset NAME`` then runs
``recsys_nightly`` on its last staged day with ``airflow dags test`` (the ``dataset`` Param
set), and promotes what the gate blessed with ``recsys_promote``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from recops.cli.common import dataset_settings_or_exit, fail, load_settings, progress_enabled
from recops.cli.dag_runs import (
    DAG_ID,
    check_conf,
    ensure_airflow_db,
    promote_challengers,
    run_dag_test,
)
from recops.cli.serving import collect_status
from recops.config import Settings

__all__ = ["last_day", "run"]


def last_day(settings: Settings) -> str | None:
    """The newest day of data of the settings' dataset: staged first, else published."""
    from recops.data import list_partitions, list_staged

    for paths in (list_staged(settings), list_partitions(settings)):
        if paths:
            return str(paths[-1].parent.name.removeprefix("date="))
    return None


def run(
    dataset: Annotated[str, typer.Option("--dataset", help="An imported dataset's name.")],
    date: Annotated[
        str | None,
        typer.Option(help="Day to run (YYYY-MM-DD); default: the dataset's last day of data."),
    ] = None,
    conf: Annotated[str, typer.Option(help="JSON DAG Params, e.g. '{\"epochs\": 2}'.")] = "{}",
) -> None:
    """Run recsys_nightly on a dataset's day with `airflow dags test`, then promote.

    Every argument is checked before anything runs. The models are the dataset's own
    (``<dataset>_retrieval`` and ``<dataset>_ranking``).
    """
    from recops.pipeline import logical_date_for

    params = check_conf(conf)
    if "dataset" in params and params["dataset"] != dataset:
        fail(
            f"--conf names dataset {params['dataset']!r} but --dataset is {dataset!r}",
            "name the dataset once, with --dataset",
        )
    if date is not None:
        from datetime import date as date_type

        try:
            date_type.fromisoformat(date)
        except ValueError:
            fail(f"--date {date!r} is not a YYYY-MM-DD day", "e.g. --date 2026-11-30")
    settings = dataset_settings_or_exit(load_settings(), dataset)
    day = date or last_day(settings)
    if day is None:
        fail(
            f"dataset {dataset!r} has no data under {settings.data_dir}",
            "land it first: `recops data import --spec spec.yaml`",
        )
    settings.ensure_dirs()
    show = progress_enabled(False)
    started = time.monotonic()
    typer.echo("[1/3] Preparing Airflow (SQLite) ...")
    ensure_airflow_db(settings)
    logical = logical_date_for(day)
    run_conf = json.dumps({**params, "dataset": dataset})
    typer.echo(f"[2/3] `airflow dags test {DAG_ID} {logical}` on {dataset} (data of {day}) ...")
    nightly = run_dag_test(settings, logical, run_conf, show_progress=show)
    typer.echo(f"      log: {nightly.log_path}")
    typer.echo(
        f"      Airflow run {nightly.run_id} (logical date {nightly.logical_date}): {nightly.url}"
    )
    typer.echo("[3/3] Promoting what the gate blessed with `airflow dags test recsys_promote` ...")
    promoted = promote_challengers(settings, show_progress=show)
    typer.echo(f"      promoted: {', '.join(promoted) or 'nothing new'}")
    status_data = collect_status(settings)
    registry = status_data["registry"]
    typer.echo(
        f"{dataset}: champion version {registry['champion_version']}, "
        f"metrics {json.dumps(status_data['champion_metrics'])}"
    )
    newest = registry["versions"][0] if registry["versions"] else None
    if newest is not None and newest != registry["champion_version"]:
        # A version the gate refused (or not promoted yet): its figures are not the champion's.
        typer.echo(
            f"{dataset}: this run's version {newest} (not the champion), "
            f"metrics {json.dumps(status_data['last_run_metrics'])}"
        )
        gate = status_data["last_run_gate"]
        if not gate.get("blessed") and gate.get("reasons"):
            # Why the gate refused it, in its own words (the thresholds are DAG Params).
            typer.echo(
                f"{dataset}: the gate refused version {newest}: {'; '.join(gate['reasons'])}"
            )
    typer.echo(
        f"run finished in {time.monotonic() - started:.0f} s; "
        f"`recops recommend --dataset {dataset} --user-id KEY` asks the served models."
    )
