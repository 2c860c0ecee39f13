"""Getting any dataset into the published layout: its spec, its files, then landing.

A dataset spec (``recops.dataset_spec``) declares the files; the import checks them,
converts them to the canonical layout (``recops.layout``), interns string keys and lands
them: history bulk-validated and published, the last days staged for the nightly
validate stage. Nothing heavy is imported here.

- ``progress``: ``ProgressCallback``, the step reporter every ingestion step calls.
- ``keys``: string keys to stable int64 ids (``intern``, ``lookup_ids``, ``lookup_keys``).
- ``convert``: ``read_table`` and ``to_layout`` (the user's tables -> published tables).
- ``spec_import``: ``import_dataset`` (a spec and its files, landed).
- ``infer``: ``infer_spec``, a usable draft spec from the files.
- ``movielens``: the recbole wheel download and ml-100k as the files its spec declares.
- ``synthetic`` / ``shop``: deterministic generators with planted structure.
- ``partitions``: partition and staging paths, idempotent parquet writes, ``publish``
  and ``land`` (bulk-validate the history, stage the last days).
- ``ingest``: ``IngestConfig`` and ``ingest`` (MovieLens or a generator, then import).
"""

from __future__ import annotations

from recops.data.convert import read_table, to_layout
from recops.data.infer import infer_spec
from recops.data.ingest import IngestConfig, ingest
from recops.data.keys import intern, lookup_ids, lookup_keys
from recops.data.movielens import (
    ML100K_FILES,
    fetch_movielens,
    load_movielens,
    movielens_tables,
    write_movielens_files,
)
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
from recops.data.spec_import import import_dataset, import_frames
from recops.data.synthetic import synthesize, synthetic_tables, write_synthetic
from recops.errors import DataError
from recops.io import sha256_file
from recops.layout import INTERACTION_COLUMNS

__all__ = [
    "INTERACTION_COLUMNS",
    "ML100K_FILES",
    "DataError",
    "IngestConfig",
    "IngestResult",
    "ProgressCallback",
    "fetch_movielens",
    "import_dataset",
    "import_frames",
    "infer_spec",
    "ingest",
    "intern",
    "land",
    "list_partitions",
    "list_staged",
    "load_movielens",
    "lookup_ids",
    "lookup_keys",
    "movielens_tables",
    "normalise",
    "partition_path",
    "publish",
    "read_interactions",
    "read_table",
    "sha256_file",
    "staged_path",
    "synthesize",
    "synthetic_tables",
    "to_layout",
    "write_movielens_files",
    "write_parquet_atomic",
    "write_synthetic",
]
