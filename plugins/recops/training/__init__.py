"""Train the two-tower retrieval model and export it as a SavedModel.

``train(TrainConfig(...))`` is the entry point. The package is split by concern:

- ``config``: ``TrainConfig`` (what to train, the knobs) and ``TrainResult``.
- ``inputs``: the model spec fitted from the dataset's layout (``fit_model_spec``), the
  model and tower inputs, the in-batch logQ and the tf.data pipelines (``make_dataset``,
  ``indexed_dataset``).
- ``strategy``: the tf.distribute strategy, seeding, and the process's role in
  ``TF_CONFIG``.
- ``backup``: verification of the BackupAndRestore checkpoint a retry resumes from.
- ``early_stopping``: the valid NDCG@10 scorer and the early-stopping callback with its
  on-disk state.
- ``export``: the output folder (staging, ``publish``, ``_SUCCESS``) and the SavedModel
  export.
- ``fit``: ``train()`` itself, which wires the rest together.

The features come from the dataset spec (``TrainConfig.spec_uri``), never from fixed
column names. The tables it reads (``recops.tables``: column lists and readers of a
layout) and the splits it writes (``recops.splits``) live in leaf modules shared with
ranking and evaluation; they are re-exported here for the modules that import them from
``recops.training``. TensorFlow is imported inside
functions, so importing this package is cheap.
"""

from __future__ import annotations

from recops.errors import CheckpointCorruptError
from recops.splits import SPLITS, split_interactions, train_rows
from recops.tables import (
    item_columns,
    latest_rows,
    read_items,
    read_parquet_columns,
    read_training_set,
    read_users,
    training_set_columns,
    user_columns,
)
from recops.training.backup import verify_backup
from recops.training.config import TrainConfig, TrainResult
from recops.training.early_stopping import early_stopping_callback
from recops.training.export import (
    CONFIG_FILE,
    RESULT_FILE,
    SUCCESS_MARKER,
    OutputConflictError,
    load_completed,
    prepare_output_dir,
    publish,
)
from recops.training.fit import TrainingDivergedError, train
from recops.training.inputs import indexed_dataset, item_log_probabilities, make_dataset
from recops.training.strategy import is_chief, seed_everything, select_strategy

__all__ = [
    "CONFIG_FILE",
    "RESULT_FILE",
    "SPLITS",
    "SUCCESS_MARKER",
    "CheckpointCorruptError",
    "OutputConflictError",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "early_stopping_callback",
    "indexed_dataset",
    "is_chief",
    "item_columns",
    "item_log_probabilities",
    "latest_rows",
    "load_completed",
    "make_dataset",
    "prepare_output_dir",
    "publish",
    "read_items",
    "read_parquet_columns",
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
]
