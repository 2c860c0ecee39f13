"""``recops demo``: ingest, run recsys_nightly with ``airflow dags test``, promote, recommend.

The whole embedded loop in one command, for a newcomer: every argument (``--conf``
against recsys_nightly's Param schemas included) is checked before anything is written.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from recops.cli.common import fail, load_settings, progress_enabled, step_bars
from recops.cli.dag_runs import (
    DAG_ID,
    check_conf,
    ensure_airflow_db,
    promote_challengers,
    run_dag_test,
)
from recops.cli.serving import collect_status, print_recommendations
from recops.errors import DataError, DataValidationError

__all__ = ["demo"]


def demo(
    source: Annotated[str, typer.Option(help="movielens or synthetic.")] = "movielens",
    date: Annotated[
        str | None, typer.Option(help="Day to run (YYYY-MM-DD); default: the last day of data.")
    ] = None,
    conf: Annotated[str, typer.Option(help="JSON DAG Params, e.g. '{\"epochs\": 2}'.")] = "{}",
    user_id: Annotated[int, typer.Option(help="User to recommend for at the end.")] = 1,
) -> None:
    """Ingest data, run recsys_nightly end to end with `airflow dags test`, then recommend.

    Progress bars show on a terminal; the whole Airflow log is kept in RECOPS_HOME/logs.
    """
    from recops.data import IngestConfig, ingest

    # Check every argument before anything is written, so a typo costs nothing.
    check_conf(conf)
    if source not in {"movielens", "synthetic"}:
        fail(f"--source {source!r} is not a source", "use --source movielens or --source synthetic")
    if date is not None:
        from datetime import date as date_type

        try:
            date_type.fromisoformat(date)
        except ValueError:
            fail(
                f"--date {date!r} is not a YYYY-MM-DD day",
                "e.g. --date 1998-04-22, or leave it out",
            )
    settings = load_settings()
    settings.ensure_dirs()
    show = progress_enabled(False)
    started = time.monotonic()
    typer.echo(f"[1/5] Ingesting {source} into {settings.data_dir} ...")
    try:
        with step_bars(show) as report:
            ingested = ingest(IngestConfig(source=source), settings, progress=report)
    except DataValidationError as exc:
        fail(
            str(exc),
            f"the report is under {settings.data_dir / 'reports'}; see docs/data_contracts.md",
        )
    except DataError as exc:
        fail(
            str(exc),
            "check the network for the one-time wheel download, "
            "or try `recops demo --source synthetic`",
        )
    typer.echo(
        f"      {ingested.n_interactions} interactions in {ingested.n_partitions} daily partitions"
    )
    from recops.pipeline import logical_date_for

    day = date or ingested.last_date
    typer.echo("[2/5] Preparing Airflow (SQLite) ...")
    ensure_airflow_db(settings)
    logical = logical_date_for(day)
    typer.echo(f"[3/5] Running `airflow dags test {DAG_ID} {logical}` (data interval {day}) ...")
    nightly = run_dag_test(settings, logical, conf, show_progress=show)
    typer.echo(f"      log: {nightly.log_path}")
    typer.echo(
        f"      Airflow run {nightly.run_id} (logical date {nightly.logical_date}): {nightly.url}"
    )
    from recops.errors import ParamError
    from recops.service.daemon import log_file, service_url, start_service
    from recops.serving.rollout import ensure_server

    # The model server and the service first, so the promotion's canary is also compared
    # through the service (the same users on variant=stable and variant=canary).
    ensure_server(settings)
    try:
        start_service(settings)
        typer.echo(f"      recommendation service: {service_url(settings)}")
    except (RuntimeError, ParamError) as exc:
        typer.echo(f"      recommendation service did not start ({log_file(settings)}): {exc}")
    typer.echo("[4/5] Promoting what the gate blessed with `airflow dags test recsys_promote` ...")
    promoted = promote_challengers(settings, show_progress=show)
    typer.echo(
        f"      promoted: {', '.join(promoted) or 'nothing new (the champion keeps serving)'}"
    )
    typer.echo(f"[5/5] Top-10 for user {user_id}: retrieval top-100, then the ranker:")
    print_recommendations(settings, user_id, 10, as_json=False)
    status_data = collect_status(settings)
    typer.echo("")
    typer.echo(f"champion: version {status_data['registry']['champion_version']}  "
               f"served: {status_data['serving']['versions']}  "
               f"metrics: {json.dumps(status_data['champion_metrics'])}")  # fmt: skip
    typer.echo(
        f"REST:  http://{settings.serving_host}:{settings.rest_port}/v1/models/{settings.model_name}"
    )
    typer.echo(f"gRPC:  {settings.serving_host}:{settings.grpc_port}")
    typer.echo(f"Recommend: {service_url(settings)}/v1/recommendations?user_id={user_id}")
    typer.echo(
        f"demo finished in {time.monotonic() - started:.0f} s; "
        "`make ui` opens Airflow, MLflow and the Feast UI."
    )
