"""Getting data into the published layout: MovieLens-100K, a synthetic generator, or yours.

The layout (daily interactions partitions, ``users.parquet``, ``items.parquet``) and its
schema are described in ``recops.data.partitions`` and ``recops.validation.schema``; new
days are staged for the nightly validate stage. Nothing heavy is imported here.

- ``progress``: ``ProgressCallback``, the step reporter every ingestion step calls.
- ``movielens``: the recbole wheel download and parsing ml-100k's RecBole files.
- ``synthetic``: the deterministic synthetic generator with planted structure.
- ``partitions``: partition and staging paths, idempotent parquet writes, ``publish``
  and ``land`` (bulk-validate the history, stage the last days).
- ``ingest``: ``IngestConfig`` and ``ingest`` (fetch or generate, then land).
- ``byod``: ``ImportConfig`` and ``import_tables`` (your tables through a column mapping).
"""

from __future__ import annotations

from recops.data.byod import ImportConfig, import_tables
from recops.data.ingest import IngestConfig, ingest
from recops.data.movielens import ML100K_FILES, fetch_movielens, load_movielens
from recops.data.partitions import (
    IngestResult,
    land,
    list_partitions,
    list_staged,
    normalise,
    partition_path,
    publish,
    read_interactions,
    staged_path,
    write_parquet_atomic,
)
from recops.data.progress import ProgressCallback
from recops.data.synthetic import synthesize
from recops.errors import DataError
from recops.io import sha256_file
from recops.validation.schema import (
    GENRES,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    OCCUPATIONS,
    USER_COLUMNS,
    genre_mask,
)

__all__ = [
    "GENRES",
    "INTERACTION_COLUMNS",
    "ITEM_COLUMNS",
    "ML100K_FILES",
    "OCCUPATIONS",
    "USER_COLUMNS",
    "DataError",
    "ImportConfig",
    "IngestConfig",
    "IngestResult",
    "ProgressCallback",
    "fetch_movielens",
    "genre_mask",
    "import_tables",
    "ingest",
    "land",
    "list_partitions",
    "list_staged",
    "load_movielens",
    "normalise",
    "partition_path",
    "publish",
    "read_interactions",
    "sha256_file",
    "staged_path",
    "synthesize",
    "write_parquet_atomic",
]
