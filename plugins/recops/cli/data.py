"""``recops data fetch|synth|infer|import``: any dataset into the published parquet layout.

``infer`` drafts a dataset spec from the files; ``import --spec`` lands what a spec
declares. Commands that land data print the ingest result as JSON on stdout; progress
bars go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recops.cli.common import (
    FlagHelpCommand,
    FlagHelpGroup,
    JsonOption,
    fail,
    load_settings,
    progress_enabled,
    step_bars,
)
from recops.errors import DataError, DataValidationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from recops.config import Settings
    from recops.data import IngestResult
    from recops.data.progress import ProgressCallback

__all__ = ["data_app"]

data_app = typer.Typer(
    cls=FlagHelpGroup,
    help="Fetch, generate, describe or import data into the published layout.",
    no_args_is_help=True,
)

#: Help lines shown by `recops data --help` (a wrapped docstring would not be one line).
IMPORT_HELP = "Land the dataset a spec declares: check, validate the history, stage the last days."
INFER_HELP = "Draft a dataset spec from your files (usable as it is; edit it if you like)."
SPEC_HINT = "docs/datasets.md describes every field of a spec and the import"

StageOption = Annotated[
    int,
    typer.Option(
        help="Last N days go to staging for the nightly run; the rest is validated and published.",
        min=0,
    ),
]


def _land(
    run: Callable[[Settings, ProgressCallback | None], IngestResult],
    as_json: bool,
    hint: str,
) -> None:
    """Run a landing step with bars on stderr and print its result as JSON."""
    settings = load_settings()
    try:
        with step_bars(progress_enabled(as_json)) as report:
            result = run(settings, report)
    except DataValidationError as exc:
        fail(
            str(exc),
            f"the report is under {settings.home / 'data'} (<dataset>/reports); "
            "see docs/data_contracts.md",
        )
    except DataError as exc:
        fail(str(exc), hint)
    # The result is JSON either way (scripts and the tests read it); --json only drops the bars.
    typer.echo(json.dumps(result.to_dict(), indent=2))


def _ingest(config: Any, as_json: bool) -> None:
    """Run ``recops.data.ingest`` and print its result."""
    from recops.data import ingest

    _land(
        lambda settings, report: ingest(config, settings, progress=report),
        as_json,
        "check the network for the one-time wheel download, or use `recops data synth`",
    )


@data_app.command("fetch", cls=FlagHelpCommand)
def data_fetch(as_json: JsonOption = False) -> None:
    """Fetch MovieLens-100K (from the recbole wheel) and import it through its spec."""
    from recops.data import IngestConfig

    _ingest(IngestConfig(source="movielens"), as_json)


@data_app.command("synth", cls=FlagHelpCommand)
def data_synth(
    mode: Annotated[
        str,
        typer.Option(
            help="movielens (shaped like ml-100k) or shop (an e-commerce log, string keys)."
        ),
    ] = "movielens",
    rows: Annotated[int, typer.Option(help="Events to generate (shop: views).", min=1)] = 20_000,
    users: Annotated[int, typer.Option(help="Users (customers) to generate.", min=1)] = 300,
    items: Annotated[int, typer.Option(help="Items (products) to generate.", min=1)] = 400,
    days: Annotated[int, typer.Option(help="Days the events span.", min=1)] = 30,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the files and their spec here instead of importing them "
            "(then `recops data import --spec OUT/<name>.yaml`).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate deterministic synthetic data with planted structure and import it.

    With ``--out`` the files and their spec are written there and nothing is imported.
    """
    from recops.data import IngestConfig
    from recops.data.synthetic import MODES, write_synthetic

    if mode not in MODES:
        fail(f"--mode {mode!r} is not a generator mode", f"use one of {', '.join(MODES)}")
    if out is not None:
        spec_path = write_synthetic(
            out, mode=mode, rows=rows, users=users, items=items, days=days, seed=seed
        )
        typer.echo(json.dumps({"spec": str(spec_path)}, indent=2))
        return
    source = "synthetic" if mode == "movielens" else mode
    config = IngestConfig(
        source=source, synthetic_rows=rows, synthetic_users=users,
        synthetic_items=items, synthetic_days=days, seed=seed,
    )  # fmt: skip
    _ingest(config, as_json)


@data_app.command("infer", help=INFER_HELP, cls=FlagHelpCommand)
def data_infer(
    name: Annotated[str, typer.Option(help="The dataset name (folder, Feast project, models).")],
    events: Annotated[
        Path,
        typer.Option(help="Events file (.csv, .tsv, .jsonl or .parquet), or a folder of them."),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the drafted spec (YAML).")],
    users: Annotated[Path | None, typer.Option(help="Users file, if any.")] = None,
    items: Annotated[Path | None, typer.Option(help="Items file, if any.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Draft a dataset spec from your files; print it unless --json (then a summary)."""
    from recops.data.infer import infer_spec, spec_draft_yaml
    from recops.io import atomic_write_text

    given = {"events": events, "users": users, "items": items}
    sources = {table: str(path) for table, path in given.items() if path is not None}
    try:
        spec = infer_spec(name, events, users, items, spec_dir=out.parent)
    except DataError as exc:
        fail(str(exc), SPEC_HINT)
    text = spec_draft_yaml(spec, sources)
    atomic_write_text(out, text)
    if as_json:
        summary = {
            "spec": str(out),
            "name": spec.name,
            "user_key": spec.events.user_key,
            "item_key": spec.events.item_key,
            "event_types": list(spec.event_types),
        }
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(text, nl=False)
        typer.echo(f"# written to {out}; import it with: recops data import --spec {out}", err=True)


@data_app.command("import", help=IMPORT_HELP, cls=FlagHelpCommand)
def data_import(
    spec: Annotated[Path, typer.Option(help="The dataset spec (YAML); its files are read.")],
    stage_last_days: StageOption = 1,
    events: Annotated[
        Path | None, typer.Option(help="Events file, instead of the spec's files.events.")
    ] = None,
    users: Annotated[
        Path | None, typer.Option(help="Users file, instead of the spec's files.users.")
    ] = None,
    items: Annotated[
        Path | None, typer.Option(help="Items file, instead of the spec's files.items.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Land the dataset a spec declares: check the files, validate the history, stage days.

    Nothing is written when a file does not fit the spec (``IMPORT_HELP``).
    """
    from recops.data import import_dataset

    files = {t: p for t, p in (("events", events), ("users", users), ("items", items)) if p}
    _land(
        lambda settings, report: import_dataset(
            spec, settings, files=files, stage_last_days=stage_last_days, progress=report
        ),
        as_json,
        SPEC_HINT,
    )
