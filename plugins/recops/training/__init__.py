"""Train the two-tower retrieval model and export it as a SavedModel.

``train(TrainConfig(...))`` is the entry point. The package is split by concern:

- ``config``: ``TrainConfig`` (what to train, the knobs) and ``TrainResult``.
- ``inputs``: the in-batch logQ and the tf.data pipelines (``make_dataset``,
  ``indexed_dataset``).
- ``strategy``: the tf.distribute strategy, seeding, and the process's role in
  ``TF_CONFIG``.
- ``backup``: verification of the BackupAndRestore checkpoint a retry resumes from.
- ``early_stopping``: the valid NDCG@10 scorer and the early-stopping callback with its
  on-disk state.
- ``export``: the output folder (staging, ``publish``, ``_SUCCESS``) and the SavedModel
  export.
- ``fit``: ``train()`` itself, which wires the rest together.

The tables it reads and the splits it writes live in the leaf modules ``recops.tables``
and ``recops.splits``, shared with ranking and evaluation; they are re-exported here for
the modules that import them from ``recops.training``. TensorFlow is imported inside
functions, so importing this package is cheap.
"""

from __future__ import annotations

from recops.errors import CheckpointCorruptError
from recops.splits import SPLITS, split_interactions, train_rows
from recops.tables import (
    ITEM_COLUMNS,
    TRAINING_SET_COLUMNS,
    USER_COLUMNS,
    latest_rows,
    read_parquet_columns,
    read_training_set,
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
    "ITEM_COLUMNS",
    "RESULT_FILE",
    "SPLITS",
    "SUCCESS_MARKER",
    "TRAINING_SET_COLUMNS",
    "USER_COLUMNS",
    "CheckpointCorruptError",
    "OutputConflictError",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "early_stopping_callback",
    "indexed_dataset",
    "is_chief",
    "item_log_probabilities",
    "latest_rows",
    "load_completed",
    "make_dataset",
    "prepare_output_dir",
    "publish",
    "read_parquet_columns",
    "read_training_set",
    "seed_everything",
    "select_strategy",
    "split_interactions",
    "train",
    "train_rows",
    "verify_backup",
]
