"""Train the two-tower retrieval model and export it as a SavedModel.

``train(TrainConfig(...))`` reads the point-in-time training set, splits it per user
(RecBole's random 80/10/10, seed ``SPLIT_SEED``), trains on the train part only under a
``tf.distribute`` strategy, and writes into ``output_dir``::

    split.parquet     user_id, item_id, split in {train, valid, test}
    weights/          spec.json + TF checkpoint, rebuilt by compression
    model/            float retrieval SavedModel (the serving contract)
    config.json       the config this folder belongs to
    result.json       TrainResult
    _SUCCESS          written last; its presence means the folder is complete
    backup/           while training: BackupAndRestore's checkpoint (``chief/``) and the
                      early-stopping state (``early_stopping/``); gone once done

A task is a transaction: outputs are written under ``_staging/`` and renamed into place,
and ``_SUCCESS`` comes last, so a killed task never leaves a folder that looks complete.
A retry resumes from the last backup (every epoch, or every ``backup_every_steps``); a
call on a completed folder returns the stored result without training. A backup that is
truncated or corrupt stops the retry with ``CheckpointCorruptError`` naming the file,
rather than silently starting from epoch 0 (``discard_corrupt_backup`` opts in to that).

Early stopping scores full-ranking NDCG@10 on the valid split after every epoch (train
items masked), keeps the best weights and stops after ``early_stopping_patience`` epochs
without improvement; the exported model holds the best epoch's weights.

TensorFlow is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops.config import RETRIEVAL_K, SPLIT_SEED
from recops.errors import CheckpointCorruptError
from recops.records import Record

__all__ = [
    "CheckpointCorruptError",
    "TrainConfig",
    "TrainResult",
    "early_stopping_callback",
    "select_strategy",
    "split_interactions",
    "train",
    "verify_backup",
]

log = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"
RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
STAGING_DIR = "_staging"
SPLITS = ("train", "valid", "test")
TRAINING_SET_COLUMNS = (
    "user_id",
    "item_id",
    "event_timestamp",
    "age",
    "gender",
    "occupation",
    "release_year",
    "genre_mask",
)
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "event_timestamp")
ITEM_COLUMNS = ("item_id", "release_year", "genre_mask", "event_timestamp")
PROTOCOLS = ("random", "temporal")
#: Cut-off of the validation metric that early stopping watches.
EARLY_STOPPING_K = 10
#: Config fields that change how a run copes with failures, not what it produces; they
#: are left out of the stored config so flipping one on a retry keeps the backup.
OPERATIONAL_FIELDS = ("discard_corrupt_backup",)
BACKUP_CHECKPOINT_DIR = "chief"
EARLY_STOPPING_DIR = "early_stopping"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Record):
    """What to train on, where to write, and the knobs.

    Attributes:
        training_set_uri: Parquet training set (Feast historical features).
        users_uri: users.parquet (not used for training; kept so the run is self-described).
        items_uri: items.parquet, the candidate catalogue embedded at export.
        output_dir: Folder owned by this run (key it on the data interval).
        epochs: Passes over the train split.
        embedding_dim: Output size of both towers.
        batch_size: Global batch; each replica gets ``batch_size / replicas`` rows and,
            with ``cross_replica_negatives``, uses every other row of the global batch
            as a negative (otherwise only the other rows of its slice).
        learning_rate: Adam learning rate.
        temperature: Softmax temperature of the cosine logits.
        logq_correction: Subtract each in-batch item's log sampling probability.
        replicas: Logical CPU devices to mirror over when there is no GPU (with GPUs,
            all of them are used; with ``TF_CONFIG``, one replica per worker device).
        seed: Seed for weights, shuffling and ``max_rows`` sampling (the split uses
            ``SPLIT_SEED``).
        max_rows: Train on at most this many train-split rows (sampled); the split itself
            always covers the whole training set.
        early_stopping_patience: Stop after this many epochs without a better valid
            NDCG@10 and keep the best epoch's weights; 0 disables early stopping (and
            the per-epoch validation).
        protocol: ``"random"`` (RecBole's per-user random 80/10/10, seed ``SPLIT_SEED``)
            or ``"temporal"`` (``recops.evaluation.temporal_split``, 80/10/10 by time).
        backup_every_steps: Back up every this many steps instead of every epoch (for
            long epochs); None backs up at each epoch end.
        mixed_precision: Train under ``mixed_float16`` when GPUs are used (never on
            CPU); logits and loss stay float32.
        cross_replica_negatives: Score each replica's users against the items of the
            whole global batch, so the loss does not depend on the replica count.
        discard_corrupt_backup: On a corrupt backup, log it and start over instead of
            raising ``CheckpointCorruptError``. Not part of the run's identity.
    """

    training_set_uri: str
    users_uri: str
    items_uri: str
    output_dir: str
    # Picked on ml-100k's valid split. logQ correction lifts Recall@10 from ~0.06 to ~0.25:
    # without it in-batch negatives over-penalise popular items. Temperature 0.2-0.3 beat
    # 0.05-0.1 and 0.5; epochs, dim and lr moved results by less than 0.01.
    epochs: int = 15
    embedding_dim: int = 64
    batch_size: int = 1024
    learning_rate: float = 0.005
    temperature: float = 0.25
    logq_correction: bool = True
    replicas: int = 2
    seed: int = 42
    max_rows: int | None = None
    early_stopping_patience: int = 3
    protocol: str = "random"
    backup_every_steps: int | None = None
    mixed_precision: bool = True
    cross_replica_negatives: bool = True
    discard_corrupt_backup: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "embedding_dim", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be > 0")
        for name in ("max_rows", "backup_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be >= 1 or None")
        if self.early_stopping_patience < 0:
            raise ValueError(
                f"TrainConfig.early_stopping_patience={self.early_stopping_patience!r} must be >= 0"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"TrainConfig.protocol={self.protocol!r} must be one of {PROTOCOLS}")

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run produces (stored as ``config.json``)."""
        return {k: v for k, v in self.to_dict().items() if k not in OPERATIONAL_FIELDS}


@dataclass(frozen=True, kw_only=True)
class TrainResult(Record):
    """Where the trained model went and how training went.

    Attributes:
        model_dir: Float retrieval SavedModel.
        weights_uri: Folder with ``spec.json`` and the weights checkpoint.
        split_uri: The per-user split parquet.
        strategy: Distribution strategy class name.
        replicas: Replicas in sync.
        epochs_run: Epochs trained by this call (fewer than configured after a resume).
        final_loss: Mean training loss of the last epoch.
        resumed_from_epoch: First epoch this call ran (0 unless resumed from a backup).
        train_rows: Examples trained on per epoch (after ``max_rows``).
        n_users: Users in the model's vocabulary (seen in train).
        n_items: Items in the model's vocabulary (seen in train).
        n_candidates: Items embedded as retrieval candidates (the catalogue).
        examples_per_s: Training throughput over this call's epochs.
        seconds_per_epoch: Mean wall time per epoch (the first includes tracing).
        k: Candidates returned by ``serving_default``.
        resumed_from_step: ``optimizer.iterations`` right after the backup was restored
            (0 for a fresh start).
        best_epoch: Epoch whose weights were exported (early stopping), None when early
            stopping is disabled.
        valid_ndcg_at_10: Valid NDCG@10 after each epoch so far, epoch 0 first (also
            the epochs of an interrupted call that this one resumed).
        stopped_early: True if early stopping ended training before ``epochs``.
        protocol: The split protocol used.
        mixed_precision: True if training ran under ``mixed_float16``.
    """

    model_dir: str
    weights_uri: str
    split_uri: str
    strategy: str
    replicas: int
    epochs_run: int
    final_loss: float
    resumed_from_epoch: int
    train_rows: int
    n_users: int
    n_items: int
    n_candidates: int
    examples_per_s: float
    seconds_per_epoch: float
    k: int
    resumed_from_step: int = 0
    best_epoch: int | None = None
    valid_ndcg_at_10: list[float] = field(default_factory=list)
    stopped_early: bool = False
    protocol: str = "random"
    mixed_precision: bool = False


# --------------------------------------------------------------------------- data


def read_parquet_columns(uri: str, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read ``columns`` from a parquet file, naming the file and any missing column.

    Args:
        uri: Parquet path.
        columns: Required columns.
        what: Human name of the table for error messages.

    Returns:
        The frame with exactly ``columns``.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If columns are missing or the table is empty.
    """
    import pyarrow.parquet as pq

    if not Path(uri).exists():
        raise FileNotFoundError(f"{what} not found: {uri}")
    available = set(pq.read_schema(uri).names)
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(f"{what} {uri} lacks columns {missing}")
    frame = pd.read_parquet(uri, columns=list(columns))
    if frame.empty:
        raise ValueError(f"{what} {uri} has no rows")
    return frame


def latest_rows(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Keep the newest row (by ``event_timestamp``) per ``key``, sorted by ``key``."""
    ordered = frame.sort_values([key, "event_timestamp"], kind="stable")
    return ordered.drop_duplicates(key, keep="last").reset_index(drop=True)


def read_training_set(uri: str) -> pd.DataFrame:
    """Read the training set, one row per (user, item): a re-rating keeps the newest."""
    frame = read_parquet_columns(uri, TRAINING_SET_COLUMNS, "training set")
    frame = frame.sort_values(["user_id", "item_id", "event_timestamp"], kind="stable")
    # Duplicate pairs could land in train and test at once and leak the answer.
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="last")
    return frame.reset_index(drop=True)


def split_interactions(
    user_id: np.ndarray, item_id: np.ndarray, seed: int = SPLIT_SEED
) -> pd.DataFrame:
    """Split each user's interactions at random into train/valid/test, as RecBole does.

    The rows are shuffled with ``seed``; then each user's rows, in shuffled order, are cut
    into ``n - 2·int(0.1n)`` train, ``int(0.1n)`` valid and ``int(0.1n)`` test, with
    RecBole's rule for small users (a part whose share is in (0, 1) gets one row while
    train keeps more than one).

    Args:
        user_id: User of each interaction.
        item_id: Item of each interaction.
        seed: Shuffle seed (``SPLIT_SEED`` for the RecBole protocol).

    Returns:
        A frame ``user_id, item_id, split`` in the input row order.
    """
    user_id = np.asarray(user_id, dtype=np.int64)
    n = user_id.size
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(user_id[order], kind="stable")]
    _, starts, counts = np.unique(user_id[order], return_index=True, return_counts=True)
    labels = np.empty(n, dtype=object)
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        n_train, n_valid, _ = _split_counts(count)
        rows = order[start : start + count]
        labels[rows[:n_train]] = "train"
        labels[rows[n_train : n_train + n_valid]] = "valid"
        labels[rows[n_train + n_valid :]] = "test"
    return pd.DataFrame(
        {
            "user_id": user_id,
            "item_id": np.asarray(item_id, dtype=np.int64),
            "split": pd.array(labels, dtype="string"),
        }
    )


def _split_counts(total: int, ratios: tuple[float, ...] = (0.8, 0.1, 0.1)) -> list[int]:
    """RecBole's ``_calcu_split_ids`` counts for one user."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def train_rows(frame: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``frame`` that ``split`` puts in train, joined on (user_id, item_id).

    Raises:
        ValueError: If the split is missing pairs of the training set or has duplicates.
    """
    keys = split[["user_id", "item_id", "split"]]
    if keys.duplicated(["user_id", "item_id"]).any():
        raise ValueError("split has duplicate (user_id, item_id) pairs")
    joined = frame.merge(keys, on=["user_id", "item_id"], how="left", validate="one_to_one")
    if joined["split"].isna().any():
        missing = int(joined["split"].isna().sum())
        raise ValueError(f"split lacks {missing} (user_id, item_id) pairs of the training set")
    return joined[joined["split"] == "train"].drop(columns="split").reset_index(drop=True)


def item_log_probabilities(item_id: np.ndarray) -> np.ndarray:
    """Log of each row's item frequency among the rows: the in-batch sampling logQ."""
    _, inverse, counts = np.unique(item_id, return_inverse=True, return_counts=True)
    return np.log(counts[inverse] / item_id.size).astype(np.float32)


# --------------------------------------------------------------------------- TF runtime


#: One strategy per device set and process. A second MirroredStrategy restarts collective
#: instance keys and can collide with the first one's cached collectives (TF #62790).
_STRATEGIES: dict[tuple[str, ...], Any] = {}


def select_strategy(replicas: int) -> tuple[Any, str, int]:
    """Pick the distribution strategy for this process.

    - ``TF_CONFIG`` set: ``MultiWorkerMirroredStrategy`` (it must be the first TF call
      of the process, as TensorFlow requires).
    - GPUs visible: ``MirroredStrategy`` over all of them.
    - Otherwise ``MirroredStrategy`` over ``replicas`` logical CPU devices, reducing
      through host memory. Logical devices can only be configured before the TF runtime
      starts; if it already has (a second call in the same process), the logical CPUs
      that exist are reused, up to ``replicas``.

    Strategies are cached per process, so train and compress in one process (``airflow
    dags test``, pytest) share one.

    Args:
        replicas: Logical CPU devices wanted when there is no GPU.

    Returns:
        ``(strategy, strategy class name, replicas in sync)``.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        key: tuple[str, ...] = ("multi_worker",)
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    elif tf.config.list_physical_devices("GPU"):
        key = ("gpu",)
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy()
    else:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
            )
        except RuntimeError:
            log.info("TF runtime already initialised; reusing its logical CPU devices")
        key = tuple(d.name for d in tf.config.list_logical_devices("CPU"))[:replicas]
        if key not in _STRATEGIES:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy(
                devices=list(key), cross_device_ops=tf.distribute.ReductionToOneDevice()
            )
    strategy = _STRATEGIES[key]
    # tf.distribute.MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy inside.
    name = "MultiWorkerMirroredStrategy" if key == ("multi_worker",) else type(strategy).__name__
    return strategy, name, int(strategy.num_replicas_in_sync)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TF, and ask TF for deterministic kernels."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def make_dataset(
    features: dict[str, np.ndarray], *, batch_size: int, seed: int, shuffle: bool = True
) -> Any:
    """Build the input pipeline: shuffled row indices, batched, gathered, prefetched.

    The arrays stay in memory as tensors; the pipeline shuffles the row *indices*
    (seeded, reshuffled every epoch), batches them, and gathers each batch's rows from
    every feature with one vectorised ``tf.gather``. That is the same stream as
    ``from_tensor_slices -> shuffle -> batch`` but about 3x cheaper on the CPU than
    shuffling and batching row by row (ml-100k: 0.3 s vs 1.0 s an epoch), which matters
    when the pipeline shares cores with the training step. No per-step pandas or Python.

    Labels are dummies: the in-batch loss derives its own. Batches are full-size so each
    replica sees a fixed number of negatives.

    Raises:
        ValueError: If there are fewer rows than one batch.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    n = len(features["user_idx"])
    if n < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training rows")
    columns = (features, np.zeros(n, np.int32))
    return indexed_dataset(
        columns, n, batch_size=batch_size, seed=seed, shuffle=shuffle, drop_remainder=True
    )


def indexed_dataset(
    columns: Any, n: int, *, batch_size: int, seed: int, shuffle: bool, drop_remainder: bool
) -> Any:
    """Batches of ``columns`` (a nest of length-``n`` arrays) gathered by shuffled row index.

    Only the ``n`` indices pass through ``shuffle``; ``from_tensor_slices -> cache ->
    shuffle`` holds one tensor per column per row, which took the ranker's 20M rows (5M
    interactions plus negatives) past 24 GiB, where this holds each array once.
    """
    import tensorflow as tf

    columns = tf.nest.map_structure(tf.convert_to_tensor, columns)
    dataset = tf.data.Dataset.range(n)
    if shuffle:
        dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(
        lambda rows: tf.nest.map_structure(lambda column: tf.gather(column, rows), columns),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory data has no files to shard by; each worker takes its share of batches.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    tf_config = json.loads(raw)
    task = tf_config.get("task", {})
    cluster = tf_config.get("cluster", {})
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in cluster


# --------------------------------------------------------------------------- folders


def load_completed(output_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Return the stored result if ``output_dir`` is complete for this same config.

    Raises:
        ValueError: If the folder is complete but was produced by a different config.
    """
    if not (output_dir / SUCCESS_MARKER).is_file():
        return None
    stored = json.loads((output_dir / CONFIG_FILE).read_text())
    if stored != config:
        raise ValueError(
            f"{output_dir} already holds a completed run with a different config; "
            "use a new output_dir"
        )
    result: dict[str, Any] = json.loads((output_dir / RESULT_FILE).read_text())
    return result


def prepare_output_dir(
    output_dir: Path,
    config: dict[str, Any],
    backup: Path | None,
    *,
    staging_name: str = STAGING_DIR,
) -> Path:
    """Create ``output_dir``, drop stale state from another config, and a fresh staging.

    Args:
        output_dir: The run's folder.
        config: The config this folder belongs to (stored as ``config.json``).
        backup: Backup folder to drop if the stored config differs.
        staging_name: Staging folder name; each process of a multi-worker run needs
            its own.

    Returns:
        The empty staging folder.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    config_path = output_dir / CONFIG_FILE
    if config_path.is_file() and json.loads(config_path.read_text()) != config:
        # A backup from other settings would be restored into the wrong model.
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    write_atomic(config_path, json.dumps(config, indent=2, sort_keys=True))
    staging = output_dir / staging_name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def publish(staging: Path, output_dir: Path, names: Sequence[str], result: dict[str, Any]) -> None:
    """Move staged outputs into place, then write the result and the success marker."""
    for name in names:
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(staging / name, target)
    write_atomic(output_dir / RESULT_FILE, json.dumps(result, indent=2, sort_keys=True))
    shutil.rmtree(staging, ignore_errors=True)
    write_atomic(output_dir / SUCCESS_MARKER, "")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename."""
    # A per-process temp name: workers of one multi-worker run write the same files.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- backup


_DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<total>\d{5})$")


def verify_backup(backup_dir: Path) -> int | None:
    """Check that the BackupAndRestore checkpoint under ``backup_dir`` is complete.

    Every tensor of the latest checkpoint is read back, so a truncated or bit-flipped
    data shard (TF checks each tensor's CRC32C) fails here, before training, instead of
    half-way into a restore, and a checkpoint whose bookkeeping is lost cannot make the
    retry start from epoch 0 without anyone noticing. The early-stopping state files are
    checked as well.

    Args:
        backup_dir: The run's backup folder (``<output_dir>/backup``).

    Returns:
        The epoch the checkpoint was saved in, or None when there is no checkpoint.

    Raises:
        CheckpointCorruptError: Naming the file that is missing, truncated or unreadable.
    """
    ckpt_dir = backup_dir / BACKUP_CHECKPOINT_DIR
    _verify_early_stopping_state(backup_dir / EARLY_STOPPING_DIR)
    if not ckpt_dir.is_dir():
        return None
    # ``ckpt-N_temp`` folders are what a save killed before its final rename leaves.
    pieces = sorted(
        p for p in ckpt_dir.iterdir() if p.name.startswith("ckpt-") and "_temp" not in p.name
    )
    state_file = ckpt_dir / "checkpoint"
    if not state_file.is_file():
        if pieces:
            raise CheckpointCorruptError(
                f"backup checkpoint state file {state_file} is missing but {pieces[0]} exists; "
                "set TrainConfig.discard_corrupt_backup=True to start over"
            )
        return None
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state_file.read_text(), re.M)
    if match is None:
        raise CheckpointCorruptError(f"backup checkpoint state file {state_file} is unreadable")
    prefix = Path(match.group(1))
    if not prefix.is_absolute():
        prefix = ckpt_dir / prefix
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise CheckpointCorruptError(f"backup checkpoint index {index} is missing")
    shards = [m for p in pieces if (m := _DATA_SHARD.match(p.name)) and m["prefix"] == prefix.name]
    total = int(shards[0]["total"]) if shards else 1
    for shard in range(total):
        data = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{total:05d}")
        if not data.is_file():
            raise CheckpointCorruptError(f"backup checkpoint data file {data} is missing")

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointCorruptError(
            f"backup checkpoint index {index} is unreadable: {exc}"
        ) from exc
    data_files = ", ".join(str(p) for p in sorted(prefix.parent.glob(f"{prefix.name}.data-*")))
    # A short shard surfaces as IndexError ("Read less bytes than requested"), a flipped
    # byte as DataLossError (CRC mismatch).
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointCorruptError(
            f"backup checkpoint data file {data_files} is truncated or corrupt "
            f"(reading {name!r}: {type(exc).__name__}); "
            "set TrainConfig.discard_corrupt_backup=True to start over"
        ) from exc
    epochs = [n for n in reader.get_variable_to_shape_map() if n.startswith("ckpt_saved_epoch")]
    return int(reader.get_tensor(epochs[0])) if epochs else None


def _verify_early_stopping_state(state_dir: Path) -> None:
    if not state_dir.is_dir():
        return
    for path in sorted(state_dir.glob("state-*.json")):
        try:
            state = json.loads(path.read_text())
            weights = state.get("weights_file")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise CheckpointCorruptError(f"early-stopping state {path} is unreadable") from exc
        if weights and not (state_dir / weights).is_file():
            raise CheckpointCorruptError(
                f"early-stopping weights {state_dir / weights} named by {path} are missing"
            )


def _prepare_backup(backup_dir: Path, discard_corrupt: bool) -> int | None:
    """Verify the backup; on corruption raise, or (opted in) log and remove it.

    Returns:
        The epoch the backup was saved in, None when training starts afresh.
    """
    try:
        saved = verify_backup(backup_dir)
    except CheckpointCorruptError as exc:
        if not discard_corrupt:
            raise
        log.warning("discarding the corrupt backup in %s and starting over: %s", backup_dir, exc)
        shutil.rmtree(backup_dir, ignore_errors=True)
        return None
    if saved is not None:
        log.info("resuming from the backup in %s (saved in epoch %d)", backup_dir, saved)
    return saved


# --------------------------------------------------------------------------- early stopping


def _load_states(state_dir: Path | None) -> dict[int, dict[str, Any]]:
    if state_dir is None or not state_dir.is_dir():
        return {}
    states = {}
    for path in state_dir.glob("state-*.json"):
        state = json.loads(path.read_text())
        states[int(state["epoch"])] = state
    return states


def _state_before(states: dict[int, dict[str, Any]], epoch: int) -> dict[str, Any] | None:
    """The newest state written before ``epoch`` began (the one its backup goes with)."""
    earlier = [e for e in states if e < epoch]
    return states[max(earlier)] if earlier else None


def _load_weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def early_stopping_callback(
    score: Callable[[Any], float],
    *,
    patience: int,
    state_dir: Path | None = None,
    write_state: bool = True,
) -> Any:
    """A Keras callback: score the model after each epoch, keep the best, stop on a plateau.

    The state after each epoch (score history, best epoch, the best weights) goes to
    ``state_dir`` before ``BackupAndRestore`` backs up that epoch, so put this callback
    before it. A resumed ``fit`` at epoch ``e`` picks up the newest state written before
    ``e`` and so agrees with the restored checkpoint even if the process died between
    the two writes. At the end of training the best weights are put back into the model.

    Args:
        score: Higher-is-better score of the model (valid NDCG@10 in ``train``).
        patience: Epochs without a strictly better score before stopping (>= 1).
        state_dir: Where the state lives (inside the backup folder); None keeps it in
            memory only.
        write_state: False on non-chief workers: they read the chief's state on resume
            but never write it.

    Returns:
        The callback; after ``fit`` it exposes ``history`` (scores, epoch 0 first),
        ``best_epoch``, ``best_score``, ``stopped_early`` and ``last_loss``.
    """
    if patience < 1:
        raise ValueError(f"patience={patience!r} must be >= 1")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    class ValidationEarlyStopping(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.history: list[float] = []
            self.best_epoch: int | None = None
            self.best_score = -math.inf
            self.stopped_early = False
            self.last_loss: float | None = None
            self._wait = 0
            self._best_weights: list[np.ndarray] | None = None
            self._weights_file: str | None = None
            self._started = False
            self._halted = False

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._started = self._halted = False

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self._started:
                return
            self._started = True
            state = _state_before(_load_states(state_dir), epoch)
            if epoch > 0 and state is None and not self.history:
                if state_dir is not None:
                    raise CheckpointCorruptError(
                        f"training resumed at epoch {epoch} but {state_dir} holds no "
                        "early-stopping state for the epochs before it"
                    )
            if state is not None:
                self._restore(state)
            if self.stopped_early:
                # Stopped before the interruption: end after this step, keep the best.
                self._halted = True
                self.model.stop_training = True

        def _restore(self, state: dict[str, Any]) -> None:
            self.history = [float(v) for v in state["history"]]
            self.best_epoch = state["best_epoch"]
            self.best_score = float(state["best_score"])
            self._wait = int(state["wait"])
            self.stopped_early = bool(state["stopped"])
            self.last_loss = state.get("loss")
            self._weights_file = state.get("weights_file")
            self._best_weights = None
            if self._weights_file and state_dir is not None:
                self._best_weights = _load_weights(state_dir / self._weights_file)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self._halted:
                return
            value = float(score(self.model))
            self.history.append(value)
            self.last_loss = float((logs or {}).get("loss", math.nan))
            if value > self.best_score:
                self.best_score, self.best_epoch, self._wait = value, epoch, 0
                self._best_weights = [w.copy() for w in self.model.get_weights()]
                if state_dir is not None and write_state:
                    self._weights_file = f"best-{epoch:05d}.npz"
                    _save_weights(state_dir / self._weights_file, self._best_weights)
            else:
                self._wait += 1
            if self._wait >= patience:
                self.stopped_early = True
                self.model.stop_training = True
            log.info(
                "epoch %d: valid NDCG@%d %.4f (best %.4f at epoch %s)",
                epoch, EARLY_STOPPING_K, value, self.best_score, self.best_epoch,
            )  # fmt: skip
            if state_dir is not None and write_state:
                state = {
                    "epoch": epoch,
                    "history": self.history,
                    "best_epoch": self.best_epoch,
                    "best_score": self.best_score,
                    "wait": self._wait,
                    "stopped": self.stopped_early,
                    "loss": self.last_loss,
                    "step": int(self.model.optimizer.iterations.numpy()),
                    "weights_file": self._weights_file,
                }
                state_dir.mkdir(parents=True, exist_ok=True)
                write_atomic(state_dir / f"state-{epoch:05d}.json", json.dumps(state))

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self._best_weights is not None:
                self.model.set_weights(self._best_weights)

    return ValidationEarlyStopping()


def _save_weights(path: Path, weights: Sequence[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, *weights)
    os.replace(tmp, path)


def _valid_ndcg_scorer(
    spec: Any,
    *,
    split: pd.DataFrame,
    profiles: pd.DataFrame,
    items: pd.DataFrame,
    k: int = EARLY_STOPPING_K,
) -> Callable[[Any], float]:
    """Full-ranking NDCG@k on the valid split, scoring with the in-memory towers.

    Users are ranked against the whole catalogue with their train items masked, as
    ``recops.evaluation`` does on the exported model.

    Args:
        spec: The model's ``TwoTowerSpec`` (vocabularies).
        split: ``user_id, item_id, split`` of the whole training set.
        profiles: One row per user with ``user_id, age, gender, occupation``.
        items: The catalogue, one row per item (``item_id, genre_mask, release_year``).
        k: Cut-off.

    Returns:
        A function of the training model returning the user-averaged NDCG@k.

    Raises:
        ValueError: If no valid user has a valid item in the catalogue.
    """
    from recops_models.metrics import ROW_BLOCK, ranking_metrics, top_k_items

    item_ids = items["item_id"].to_numpy(np.int64)
    column_of = pd.Series(np.arange(item_ids.size), index=item_ids)
    cols = column_of.reindex(split["item_id"].to_numpy()).to_numpy()
    known = ~np.isnan(cols)
    frame = split.assign(col=np.where(known, cols, -1).astype(np.int64))[known]
    valid = frame[frame["split"] == "valid"]
    truth = valid.groupby("user_id")["col"].apply(np.asarray)
    if truth.empty:
        raise ValueError("the valid split has no items in the catalogue; cannot early-stop")
    users = truth.index.to_numpy(np.int64)
    seen = frame[frame["split"] == "train"].groupby("user_id")["col"].apply(np.asarray)
    exclude = [seen.get(u, np.empty(0, np.int64)) for u in users.tolist()]
    ground_truth = truth.tolist()
    profile = profiles.set_index("user_id").reindex(users)
    k = min(k, item_ids.size)
    user_features = {
        "user_idx": spec.user_index(users),
        "gender_idx": spec.gender_index(profile["gender"].to_numpy()),
        "occupation_idx": spec.occupation_index(profile["occupation"].to_numpy()),
        "age": profile["age"].to_numpy(np.int64),
    }
    item_features = {
        "item_idx": spec.item_index(item_ids),
        "genre_mask": items["genre_mask"].to_numpy(np.int64),
        "release_year": items["release_year"].to_numpy(np.int64),
    }
    towers: dict[int, tuple[Any, Any]] = {}

    def score(model: Any) -> float:
        from recops_models.two_tower import towers_from_training_model

        if id(model) not in towers:
            towers.clear()
            towers[id(model)] = towers_from_training_model(model)
        user_tower, item_tower = towers[id(model)]
        user = user_tower(user_features, training=False).numpy()
        item = item_tower(item_features, training=False).numpy()
        # Score a block of users at a time: the whole users x items matrix is 4 GB at
        # 50k x 20k, and ranking it needs several copies.
        ranked = [
            top_k_items(user[rows] @ item.T, k, exclude[rows])
            for rows in (slice(i, i + ROW_BLOCK) for i in range(0, len(user), ROW_BLOCK))
        ]
        return ranking_metrics(np.concatenate(ranked), ground_truth, k).ndcg

    return score


# --------------------------------------------------------------------------- train


def _split(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The ``user_id, item_id, split`` frame of ``frame`` under ``protocol``."""
    if protocol == "random":
        return split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())
    try:
        from recops.evaluation import temporal_split
    except ImportError as exc:
        raise ValueError(
            "TrainConfig.protocol='temporal' needs recops.evaluation.temporal_split"
        ) from exc
    split: pd.DataFrame = temporal_split(
        frame["user_id"].to_numpy(),
        frame["item_id"].to_numpy(),
        frame["event_timestamp"].to_numpy(),
        ratios=(0.8, 0.1, 0.1),
    )
    return split[["user_id", "item_id", "split"]]


def _worker_name() -> str:
    raw = os.environ.get("TF_CONFIG")
    task = json.loads(raw).get("task", {}) if raw else {}
    return f"{task.get('type', 'worker')}{task.get('index', 0)}"


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train the two-tower model and export the float retrieval SavedModel.

    Args:
        config: What to train and where to write.
        callbacks: Extra Keras callbacks (logging, or fault injection in tests); they
            run after the backup callback.

    Returns:
        The result; the stored one when ``output_dir`` is already complete.

    Raises:
        ValueError: On bad input data or a completed ``output_dir`` of another config.
        CheckpointCorruptError: If the backup left by an interrupted call is truncated
            or corrupt (unless ``discard_corrupt_backup``).
    """
    output_dir = Path(config.output_dir)
    config_dict = config.identity()
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result without training", output_dir)
        return TrainResult.from_dict(done)
    backup_dir = output_dir / "backup"
    chief = is_chief()
    staging = prepare_output_dir(
        output_dir,
        config_dict,
        backup_dir,
        staging_name=STAGING_DIR if chief else f"{STAGING_DIR}_{_worker_name()}",
    )

    frame = read_training_set(config.training_set_uri)
    split = _split(frame, config.protocol)
    if chief:
        split.to_parquet(staging / "split.parquet", index=False)
    rows = train_rows(frame, split)
    if config.max_rows is not None and len(rows) > config.max_rows:
        keep = np.random.default_rng(config.seed).choice(len(rows), config.max_rows, replace=False)
        rows = rows.iloc[np.sort(keep)].reset_index(drop=True)
    items = latest_rows(read_parquet_columns(config.items_uri, ITEM_COLUMNS, "items"), "item_id")

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # The strategy comes first: logical devices can only be set before TF starts.
    strategy, strategy_name, replicas = select_strategy(config.replicas)
    if config.batch_size % replicas:
        raise ValueError(
            f"TrainConfig.batch_size={config.batch_size} is not divisible by {replicas} replicas"
        )
    # After the strategy: reading the checkpoint must not be the process's first TF call.
    saved_epoch = _prepare_backup(backup_dir, config.discard_corrupt_backup)
    seed_everything(config.seed)
    import tensorflow as tf
    import tf_keras
    from recops_models.two_tower import (
        InBatchSoftmaxLoss,
        TwoTowerSpec,
        build_training_model,
        export_retrieval_model,
        model_inputs,
        save_trained_model,
    )

    spec = TwoTowerSpec.from_columns(
        user_id=rows["user_id"].to_numpy(),
        item_id=rows["item_id"].to_numpy(),
        gender=rows["gender"].to_numpy(),
        occupation=rows["occupation"].to_numpy(),
        age=rows["age"].to_numpy(),
        release_year=rows["release_year"].to_numpy(),
        embedding_dim=config.embedding_dim,
        temperature=config.temperature,
    )
    logq = item_log_probabilities(rows["item_id"].to_numpy()) if config.logq_correction else None
    features = model_inputs(spec, {c: rows[c].to_numpy() for c in rows.columns}, logq)
    dataset = make_dataset(features, batch_size=config.batch_size, seed=config.seed)
    # float16 only pays off on GPUs; on CPU it is slower and less accurate.
    mixed = config.mixed_precision and bool(tf.config.list_logical_devices("GPU"))

    with strategy.scope():
        model = build_training_model(
            spec, mixed_precision=mixed, cross_replica=config.cross_replica_negatives
        )
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate),
            loss=InBatchSoftmaxLoss(),
        )

    stopper = None
    fit_callbacks: list[Any] = []
    state_dir = backup_dir / EARLY_STOPPING_DIR
    if config.early_stopping_patience:
        scorer = _valid_ndcg_scorer(
            spec,
            split=split,
            profiles=latest_rows(frame[list(USER_COLUMNS)], "user_id"),
            items=items,
        )
        stopper = early_stopping_callback(
            scorer,
            patience=config.early_stopping_patience,
            state_dir=state_dir,
            write_state=chief,
        )
        # Before the backup callback: an epoch's state is on disk before its backup.
        fit_callbacks.append(stopper)
    timer = _epoch_timer()
    fit_callbacks += [
        # The checkpoint outlives fit (removed after publishing), so a process lost
        # during the export resumes after the last epoch instead of from epoch 0.
        tf_keras.callbacks.BackupAndRestore(
            backup_dir=str(backup_dir),
            save_freq=config.backup_every_steps or "epoch",
            delete_checkpoint=False,
        ),
        timer,
        *callbacks,
    ]
    resume_stopped = _finished_state(state_dir, config, saved_epoch)
    started = time.perf_counter()
    if resume_stopped is not None:
        # Training had finished before the interruption: export the best weights.
        log.info("training had finished before the interruption; exporting its best epoch")
        model.set_weights(_load_weights(state_dir / resume_stopped["weights_file"]))
        losses = [resume_stopped["loss"]]
    else:
        history = model.fit(dataset, epochs=config.epochs, callbacks=fit_callbacks, verbose=0)
        losses = history.history.get("loss", [])
    fit_seconds = time.perf_counter() - started
    # A backup taken after the last epoch leaves nothing to run; measure the loss then.
    final_loss = float(losses[-1]) if losses else float(model.evaluate(dataset, verbose=0))
    if not math.isfinite(final_loss):
        raise ValueError(f"training diverged: final loss {final_loss}; lower learning_rate")
    epochs_run = len(timer.durations)
    steps = len(rows) // config.batch_size

    if chief:
        # A plain float32 copy of the weights: the export must not depend on the strategy.
        plain = build_training_model(spec)
        plain.set_weights(model.get_weights())
        save_trained_model(plain, spec, staging / "weights")
        k = export_retrieval_model(
            model=plain,
            spec=spec,
            items={c: items[c].to_numpy() for c in ("item_id", "genre_mask", "release_year")},
            export_dir=staging / "model",
            k=RETRIEVAL_K,
        )
    else:
        k = min(RETRIEVAL_K, len(items))
    first_epoch = timer.first_epoch if timer.first_epoch is not None else config.epochs
    restored_step = timer.restored_step
    if resume_stopped is not None:
        best_epoch, scores, stopped = (
            resume_stopped["best_epoch"], resume_stopped["history"], resume_stopped["stopped"]
        )  # fmt: skip
        first_epoch = int(resume_stopped["epoch"]) + 1
        restored_step = int(resume_stopped["step"])
    elif stopper is not None:
        best_epoch, scores, stopped = stopper.best_epoch, stopper.history, stopper.stopped_early
    else:
        best_epoch, scores, stopped = None, [], False
    result = TrainResult(
        model_dir=str(output_dir / "model"),
        weights_uri=str(output_dir / "weights"),
        split_uri=str(output_dir / "split.parquet"),
        strategy=strategy_name,
        replicas=replicas,
        epochs_run=epochs_run,
        final_loss=final_loss,
        resumed_from_epoch=first_epoch,
        train_rows=len(rows),
        n_users=len(spec.user_ids),
        n_items=len(spec.item_ids),
        n_candidates=len(items),
        examples_per_s=(steps * config.batch_size * epochs_run / fit_seconds)
        if epochs_run
        else 0.0,
        seconds_per_epoch=(float(np.mean(timer.durations)) if timer.durations else 0.0),
        k=k,
        resumed_from_step=restored_step,
        best_epoch=best_epoch,
        valid_ndcg_at_10=[float(v) for v in scores],
        stopped_early=bool(stopped),
        protocol=config.protocol,
        mixed_precision=mixed,
    )
    if chief:
        publish(staging, output_dir, ("split.parquet", "weights", "model"), result.to_dict())
        # A completed run needs no backup (and the next retry must not resume it).
        shutil.rmtree(backup_dir, ignore_errors=True)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("trained %s", result.to_dict())
    return result


def _finished_state(
    state_dir: Path, config: TrainConfig, saved_epoch: int | None
) -> dict[str, Any] | None:
    """The early-stopping state if training had finished (stopped or all epochs) before
    the interruption; None when there is training left to do."""
    if not config.early_stopping_patience or saved_epoch is None:
        return None
    # An epoch-end backup resumes at the next epoch. A step backup may resume inside its
    # own epoch; then the callback redoes that epoch's tail and decides again.
    resume_at = saved_epoch + 1 if config.backup_every_steps is None else saved_epoch
    state = _state_before(_load_states(state_dir), resume_at)
    if state is None or not state.get("weights_file"):
        return None
    return state if state["stopped"] or resume_at >= config.epochs else None


def _epoch_timer() -> Any:
    """A Keras callback recording the restored step, the first epoch run and epoch times."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    class EpochTimer(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.first_epoch: int | None = None
            self.restored_step = 0
            self.durations: list[float] = []
            self._start = 0.0

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            # Runs after BackupAndRestore.on_train_begin has restored the optimizer.
            self.restored_step = int(self.model.optimizer.iterations.numpy())

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.first_epoch is None:
                self.first_epoch = epoch
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            duration = time.perf_counter() - self._start
            self.durations.append(duration)
            loss = (logs or {}).get("loss", math.nan)
            log.info("epoch %d: %.1fs, loss %.4f", epoch, duration, loss)

    return EpochTimer()
