"""The ingest stage: fetch MovieLens-100K or generate synthetic data, then land it.

``ingest`` gets the three tables from the chosen source and hands them to
``recops.data.partitions.land``, which bulk-validates and publishes the history and
stages the last days for the nightly validate stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from recops.config import Settings
from recops.data.movielens import fetch_movielens, load_movielens
from recops.data.partitions import IngestResult, land
from recops.data.progress import ProgressCallback, report_progress
from recops.data.synthetic import synthesize
from recops.errors import DataError
from recops.records import Record

__all__ = ["IngestConfig", "ingest"]


@dataclass(frozen=True, kw_only=True)
class IngestConfig(Record):
    """What to ingest.

    Attributes:
        source: ``movielens`` (ml-100k from the recbole wheel) or ``synthetic``.
        synthetic_rows: Interactions to generate when ``source`` is ``synthetic``.
        synthetic_users: Users to generate.
        synthetic_items: Items to generate.
        synthetic_days: Days the synthetic events span.
        seed: Seed of the synthetic generator.
        stage_last_days: The last N days of data land in staging (for the nightly validate
            stage to publish); earlier days are bulk-validated and published. 0 publishes all.
    """

    source: str = "movielens"
    synthetic_rows: int = 20_000
    synthetic_users: int = 300
    synthetic_items: int = 400
    synthetic_days: int = 30
    seed: int = 7
    stage_last_days: int = 1


def ingest(
    config: IngestConfig,
    settings: Settings | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Fetch or generate data; publish the validated history and stage the last days.

    Args:
        config: Which source to ingest.
        settings: Deployment settings; read from the environment when omitted.
        progress: Called as each step (download, generation, validation, publishing)
            advances; None reports nothing.

    Returns:
        Paths and counts of what was published and staged.

    Raises:
        DataError: The source is unknown, or its data cannot be fetched or parsed.
        recops.errors.DataValidationError: The history fails the contract.
    """
    settings = settings or Settings.from_env()
    if config.source == "movielens":
        raw_dir = fetch_movielens(settings, progress=progress)
        report_progress(progress, "parsing ml-100k", 0, 1)
        tables = load_movielens(raw_dir)
        report_progress(progress, "parsing ml-100k", 1, 1)
    elif config.source == "synthetic":
        step = f"generating {config.synthetic_rows:,} synthetic interactions"
        report_progress(progress, step, 0, 1)
        tables = synthesize(
            rows=config.synthetic_rows,
            users=config.synthetic_users,
            items=config.synthetic_items,
            days=config.synthetic_days,
            seed=config.seed,
        )
        report_progress(progress, step, 1, 1)
    else:
        raise DataError(f"unknown source {config.source!r}; expected 'movielens' or 'synthetic'")
    return land(
        settings,
        *tables,
        source=config.source,
        stage_last_days=config.stage_last_days,
        progress=progress,
    )
