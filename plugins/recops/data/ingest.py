"""The ingest stage: MovieLens-100K or a synthetic dataset, through its spec, landed.

``ingest`` writes the chosen source's files as its shipped spec declares them (ml-100k:
``datasets/movielens-100k.yaml``; the generators: their mode's spec) under the cache and
hands them to the generic importer (``recops.data.spec_import.import_dataset``), which
checks them, converts them, bulk-validates and publishes the history and stages the last
days for the nightly validate stage. The dataset lands in its spec's data folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from recops.config import Settings
from recops.data.movielens import MOVIELENS_SPEC, fetch_movielens, write_movielens_files
from recops.data.partitions import IngestResult
from recops.data.progress import ProgressCallback, report_progress
from recops.data.spec_import import import_dataset
from recops.data.synthetic import write_synthetic
from recops.errors import DataError
from recops.records import Record

__all__ = ["SOURCES", "IngestConfig", "ingest"]

#: Source -> synthetic mode (None: ml-100k itself).
SOURCES: dict[str, str | None] = {"movielens": None, "synthetic": "movielens", "shop": "shop"}


@dataclass(frozen=True, kw_only=True)
class IngestConfig(Record):
    """What to ingest.

    Attributes:
        source: ``movielens`` (ml-100k from the recbole wheel), ``synthetic`` (generated,
            shaped like MovieLens, landed as ``movielens-100k``) or ``shop`` (the
            generator's e-commerce log, landed as ``shop-synthetic``).
        synthetic_rows: Interactions to generate (``shop``: views).
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
    """Fetch or generate a dataset's files; import them (history published, last days staged).

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
    if config.source not in SOURCES:
        known = "', '".join(SOURCES)
        raise DataError(f"unknown source {config.source!r}; expected '{known}'")
    mode = SOURCES[config.source]
    if mode is None:
        raw_dir = fetch_movielens(settings, progress=progress)
        report_progress(progress, "parsing ml-100k", 0, 1)
        files = write_movielens_files(raw_dir, settings.cache_dir / "ml-100k" / "files")
        report_progress(progress, "parsing ml-100k", 1, 1)
        return import_dataset(
            MOVIELENS_SPEC,
            settings,
            files=files,
            source=config.source,
            stage_last_days=config.stage_last_days,
            progress=progress,
        )
    step = f"generating {config.synthetic_rows:,} synthetic interactions"
    report_progress(progress, step, 0, 1)
    spec_path = write_synthetic(
        settings.cache_dir / "synthetic" / mode,
        mode=mode,
        rows=config.synthetic_rows,
        users=config.synthetic_users,
        items=config.synthetic_items,
        days=config.synthetic_days,
        seed=config.seed,
    )
    report_progress(progress, step, 1, 1)
    return import_dataset(
        spec_path,
        settings,
        source=config.source,
        stage_last_days=config.stage_last_days,
        progress=progress,
    )
