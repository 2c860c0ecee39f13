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
    backup/           BackupAndRestore state while training; gone once done

A task is a transaction: outputs are written under ``_staging/`` and renamed into place,
and ``_SUCCESS`` comes last, so a killed task never leaves a folder that looks complete.
A retry resumes from the last finished epoch; a call on a completed folder returns the
stored result without training.

TensorFlow is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recops.config import RETRIEVAL_K, SPLIT_SEED
from recops.records import Record

__all__ = [
    "TrainConfig",
    "TrainResult",
    "select_strategy",
    "split_interactions",
    "train",
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
        batch_size: Global batch; each replica gets ``batch_size / replicas`` rows and
            uses the other rows of its slice as negatives.
        learning_rate: Adam learning rate.
        temperature: Softmax temperature of the cosine logits.
        logq_correction: Subtract each in-batch item's log sampling probability.
        replicas: Logical CPU devices to mirror over when there is no GPU.
        seed: Seed for weights, shuffling and ``max_rows`` sampling (the split uses
            ``SPLIT_SEED``).
        max_rows: Train on at most this many train-split rows (sampled); the split itself
            always covers the whole training set.
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

    def __post_init__(self) -> None:
        for name in ("epochs", "embedding_dim", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be > 0")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"TrainConfig.max_rows={self.max_rows!r} must be >= 1 or None")


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
    return strategy, type(strategy).__name__, int(strategy.num_replicas_in_sync)


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
    """Build the input pipeline: in-memory slices, cache, shuffle, batch, prefetch.

    Labels are dummies: the in-batch loss derives its own. Batches are full-size so each
    replica sees a fixed number of negatives.

    Raises:
        ValueError: If there are fewer rows than one batch.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    n = len(features["user_idx"])
    if n < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training rows")
    dataset = tf.data.Dataset.from_tensor_slices((features, np.zeros(n, np.int32))).cache()
    if shuffle:
        dataset = dataset.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
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


def prepare_output_dir(output_dir: Path, config: dict[str, Any], backup: Path | None) -> Path:
    """Create ``output_dir``, drop stale state from another config, and a fresh staging.

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
    staging = output_dir / STAGING_DIR
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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- train


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
    """
    output_dir = Path(config.output_dir)
    config_dict = config.to_dict()
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result without training", output_dir)
        return TrainResult.from_dict(done)
    backup_dir = output_dir / "backup"
    staging = prepare_output_dir(output_dir, config_dict, backup_dir)

    frame = read_training_set(config.training_set_uri)
    split = split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())
    split.to_parquet(staging / "split.parquet", index=False)
    rows = frame[(split["split"] == "train").to_numpy()].reset_index(drop=True)
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
    seed_everything(config.seed)
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

    with strategy.scope():
        model = build_training_model(spec)
        model.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=config.learning_rate),
            loss=InBatchSoftmaxLoss(),
        )
    timer = _epoch_timer()
    started = time.perf_counter()
    history = model.fit(
        dataset,
        epochs=config.epochs,
        callbacks=[
            tf_keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir)),
            timer,
            *callbacks,
        ],
        verbose=0,
    )
    fit_seconds = time.perf_counter() - started
    losses = history.history.get("loss", [])
    # A backup taken after the last epoch leaves nothing to run; measure the loss then.
    final_loss = float(losses[-1]) if losses else float(model.evaluate(dataset, verbose=0))
    if not math.isfinite(final_loss):
        raise ValueError(f"training diverged: final loss {final_loss}; lower learning_rate")
    epochs_run = len(timer.durations)
    steps = len(rows) // config.batch_size

    if is_chief():
        # A plain copy of the weights: the export must not depend on the strategy.
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
    result = TrainResult(
        model_dir=str(output_dir / "model"),
        weights_uri=str(output_dir / "weights"),
        split_uri=str(output_dir / "split.parquet"),
        strategy=strategy_name,
        replicas=replicas,
        epochs_run=epochs_run,
        final_loss=final_loss,
        resumed_from_epoch=timer.first_epoch if timer.first_epoch is not None else config.epochs,
        train_rows=len(rows),
        n_users=len(spec.user_ids),
        n_items=len(spec.item_ids),
        n_candidates=len(items),
        examples_per_s=(steps * config.batch_size * epochs_run / fit_seconds)
        if epochs_run
        else 0.0,
        seconds_per_epoch=(float(np.mean(timer.durations)) if timer.durations else 0.0),
        k=k,
    )
    if is_chief():
        publish(staging, output_dir, ("split.parquet", "weights", "model"), result.to_dict())
        # Keras deletes the checkpoint but leaves the folder; a done run needs neither.
        shutil.rmtree(backup_dir, ignore_errors=True)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("trained %s", result.to_dict())
    return result


def _epoch_timer() -> Any:
    """A Keras callback recording the first epoch run and each epoch's wall time."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras

    class EpochTimer(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.first_epoch: int | None = None
            self.durations: list[float] = []
            self._start = 0.0

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
