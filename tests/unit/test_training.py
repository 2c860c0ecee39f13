"""The ``recops.training`` façade: every name callers import from it is still there.

The tests of each submodule live in ``tests/unit/training/``.
"""

from __future__ import annotations

import recops.training
from recops import splits, tables

#: What plugins/, benchmarks/ and tests/ import from ``recops.training`` (compression
#: included, until it imports from the submodules and leaves directly).
IMPORTED = {
    "CONFIG_FILE",
    "RESULT_FILE",
    "SPLITS",
    "SUCCESS_MARKER",
    "CheckpointCorruptError",
    "TrainConfig",
    "TrainResult",
    "early_stopping_callback",
    "indexed_dataset",
    "item_log_probabilities",
    "item_columns",
    "latest_rows",
    "load_completed",
    "make_dataset",
    "prepare_output_dir",
    "publish",
    "read_parquet_columns",
    "read_items",
    "read_training_set",
    "read_users",
    "seed_everything",
    "select_strategy",
    "split_interactions",
    "train",
    "train_rows",
    "training_set_columns",
    "user_columns",
    "verify_backup",
}


def test_facade_exports_every_imported_name() -> None:
    assert IMPORTED <= set(recops.training.__all__)
    for name in recops.training.__all__:
        assert hasattr(recops.training, name), name


def test_facade_reexports_the_leaves_not_copies() -> None:
    assert recops.training.split_interactions is splits.split_interactions
    assert recops.training.read_parquet_columns is tables.read_parquet_columns
    assert recops.training.read_training_set is tables.read_training_set
