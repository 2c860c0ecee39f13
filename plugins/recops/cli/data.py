"""``recops data fetch|synth|import``: land data into the published parquet layout.

Each command prints the ingest result as JSON on stdout; progress bars go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from recops.cli.common import JsonOption, fail, load_settings, progress_enabled, step_bars
from recops.errors import DataError, DataValidationError

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Fetch or generate data into the published layout.", no_args_is_help=True
)

#: `data import`'s help, on one line in `recops data --help` (a wrapped docstring would not be).
IMPORT_HELP = (
    "Bring your own data: map your columns onto ours, validate the history, stage the last days."
)


def _ingest(config: Any, as_json: bool) -> None:
    """Run ``recops.data.ingest`` with bars on stderr and print its result as JSON."""
    from recops.data import ingest

    settings = load_settings()
    try:
        with step_bars(progress_enabled(as_json)) as report:
            result = ingest(config, settings, progress=report)
    except DataValidationError as exc:
        fail(
            str(exc),
            f"the report is under {settings.data_dir / 'reports'}; see docs/data_contracts.md",
        )
    except DataError as exc:
        fail(
            str(exc),
            "check the network for the one-time wheel download, or use `recops data synth`",
        )
    # The result is JSON either way (scripts and the tests read it); --json only drops the bars.
    typer.echo(json.dumps(result.to_dict(), indent=2))


@data_app.command("fetch")
def data_fetch(as_json: JsonOption = False) -> None:
    """Fetch MovieLens-100K (from the recbole wheel) and publish it as parquet partitions."""
    from recops.data import IngestConfig

    _ingest(IngestConfig(source="movielens"), as_json)


@data_app.command("synth")
def data_synth(
    rows: Annotated[int, typer.Option(help="Interactions to generate.", min=1)] = 20_000,
    users: Annotated[int, typer.Option(help="Users to generate.", min=1)] = 300,
    items: Annotated[int, typer.Option(help="Items to generate.", min=1)] = 400,
    days: Annotated[
        int, typer.Option(help="Days the events span (ending 1998-04-22).", min=1)
    ] = 30,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
    as_json: JsonOption = False,
) -> None:
    """Generate deterministic synthetic data with planted structure and publish it."""
    from recops.data import IngestConfig

    config = IngestConfig(
        source="synthetic", synthetic_rows=rows, synthetic_users=users,
        synthetic_items=items, synthetic_days=days, seed=seed,
    )  # fmt: skip
    _ingest(config, as_json)


@data_app.command("import", help=IMPORT_HELP)
def data_import(
    interactions: Annotated[
        Path, typer.Option(help="Interactions table (.parquet, .csv or .tsv).")
    ],
    users: Annotated[Path, typer.Option(help="Users table (.parquet, .csv or .tsv).")],
    items: Annotated[Path, typer.Option(help="Items table (.parquet, .csv or .tsv).")],
    mapping: Annotated[
        str,
        typer.Option(
            help='JSON: our column -> yours, e.g. \'{"user_id": "uid", "event_timestamp": "ts"}\'.'
        ),
    ] = "{}",
    stage_last_days: Annotated[
        int,
        typer.Option(
            help="Last N days go to staging for the nightly run; "
            "the rest is validated and published.",
            min=0,
        ),
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Bring your own data: map your columns onto ours and validate the history.

    The last ``stage_last_days`` days are staged for the nightly run (``IMPORT_HELP``).
    """
    from recops.data import ImportConfig, import_tables

    try:
        columns = json.loads(mapping)
    except json.JSONDecodeError as exc:
        fail(
            f"--mapping is not valid JSON: {exc}",
            "quote keys and values with double quotes inside single shell quotes",
        )
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        fail(
            "--mapping must be a JSON object of column names",
            'e.g. --mapping \'{"user_id": "uid", "event_timestamp": "ts"}\' '
            "(docs/data_contracts.md)",
        )
    config = ImportConfig(
        interactions_path=str(interactions), users_path=str(users), items_path=str(items),
        mapping=columns, stage_last_days=stage_last_days,
    )  # fmt: skip
    settings = load_settings()
    try:
        with step_bars(progress_enabled(as_json)) as report:
            result = import_tables(config, settings, progress=report)
    except (DataError, DataValidationError) as exc:
        fail(str(exc), "see docs/data_contracts.md for the schema and the mapping")
    typer.echo(json.dumps(result.to_dict(), indent=2))
