"""The ``train()`` entry point: split, fit under a strategy with backups, export, publish.

``train(TrainConfig(...))`` reads the dataset's layout from its spec (``spec_uri``: which
user and item attributes the towers take, and of what kind), reads the point-in-time
training set, splits it per user (RecBole's random 80/10/10, seed ``SPLIT_SEED``, or by
time), fits the feature vocabularies and statistics on the users and items tables
restricted to the train split's entities, trains on the train part only under a
``tf.distribute`` strategy, and writes into ``output_dir``::

    split.parquet     user_id, item_id, split in {train, valid, test}, event_type
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

TensorFlow is imported inside ``train``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from recops_models.tf_env import tensorflow, use_legacy_keras

from recops.config import RETRIEVAL_K
from recops.dataset_spec import EvaluationSpec, load_spec
from recops.errors import ParamError, PermanentError
from recops.layout import history_length_of, layout_from_spec, protocol_of
from recops.splits import split_interactions, temporal_split, train_rows
from recops.tables import read_items, read_training_set, read_users
from recops.tracking_epochs import epoch_logger
from recops.training.backup import BACKUP_DIR, EARLY_STOPPING_DIR, prepare_backup
from recops.training.config import TrainConfig, TrainResult
from recops.training.early_stopping import (
    early_stopping_callback,
    finished_state,
    load_weights,
    valid_ndcg_scorer,
)
from recops.training.export import (
    STAGING_DIR,
    export_model,
    load_completed,
    prepare_output_dir,
    publish,
)
from recops.training.inputs import (
    fit_model_spec,
    item_log_probabilities,
    make_dataset,
    training_inputs,
)
from recops.training.strategy import is_chief, seed_everything, select_strategy, worker_name

__all__ = ["TrainingDivergedError", "split_frame", "train"]

log = logging.getLogger(__name__)


class TrainingDivergedError(PermanentError, ValueError):
    """The training loss is not finite; a lower learning rate is the usual fix."""


def split_frame(
    frame: pd.DataFrame, protocol: str, evaluation: EvaluationSpec | None = None
) -> pd.DataFrame:
    """The ``user_id, item_id, split, event_type`` frame of ``frame`` under ``protocol``.

    The shares (and the random split's seed) are the dataset spec's ``evaluation``
    block's (``EvaluationSpec.shares``); without one, RecBole's 80/10/10 and seed.
    ``event_type`` travels with the split so evaluation can count only the spec's
    positive types as hits and mask only its seen types.
    """
    evaluation = evaluation or EvaluationSpec()
    ratios = evaluation.shares(protocol)
    if protocol == "random":
        split = split_interactions(
            frame["user_id"].to_numpy(),
            frame["item_id"].to_numpy(),
            seed=evaluation.random_split.seed,
            ratios=ratios,
        )
    else:
        split = temporal_split(
            frame["user_id"].to_numpy(),
            frame["item_id"].to_numpy(),
            frame["event_timestamp"].to_numpy(),
            ratios=ratios,
        )[["user_id", "item_id", "split"]]
    types = frame[["user_id", "item_id", "event_type"]]
    return split.merge(types, on=["user_id", "item_id"], how="left", validate="one_to_one")


def train(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train the two-tower model and export the float retrieval SavedModel.

    Args:
        config: What to train and where to write.
        callbacks: Extra Keras callbacks (logging, or fault injection in tests); they
            run after the backup callback.

    Returns:
        The result; the stored one when ``output_dir`` is already complete.

    Raises:
        DataError: On bad input data (a ``ValueError``; ``InputMissingError``, also a
            ``FileNotFoundError``, when an input file is missing).
        ParamError: If ``batch_size`` does not suit the replicas or the train rows.
        OutputConflictError: If ``output_dir`` holds a completed run of another config.
        TrainingDivergedError: If the final loss is not finite.
        CheckpointCorruptError: If the backup left by an interrupted call is truncated
            or corrupt (unless ``discard_corrupt_backup``).
    """
    output_dir = Path(config.output_dir)
    config_dict = config.identity()
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result without training", output_dir)
        return TrainResult.from_dict(done)
    backup_dir = output_dir / BACKUP_DIR
    chief = is_chief()
    staging = prepare_output_dir(
        output_dir,
        config_dict,
        backup_dir,
        staging_name=STAGING_DIR if chief else f"{STAGING_DIR}_{worker_name()}",
    )

    # Read once: every choice of this run comes from the same version of the file.
    dataset_spec = load_spec(config.spec_uri)
    layout = layout_from_spec(dataset_spec)
    protocol = protocol_of(config.protocol, dataset_spec)
    frame = read_training_set(config.training_set_uri, layout)
    split = split_frame(frame, protocol, dataset_spec.evaluation)
    if chief:
        split.to_parquet(staging / "split.parquet", index=False)
    rows = train_rows(frame, split)
    if config.max_rows is not None and len(rows) > config.max_rows:
        keep = np.random.default_rng(config.seed).choice(len(rows), config.max_rows, replace=False)
        rows = rows.iloc[np.sort(keep)].reset_index(drop=True)
    users = read_users(config.users_uri, layout)
    items = read_items(config.items_uri, layout)

    use_legacy_keras()
    # The strategy comes first: logical devices can only be set before TF starts.
    strategy, strategy_name, replicas = select_strategy(config.replicas)
    if config.batch_size % replicas:
        raise ParamError(
            f"TrainConfig.batch_size={config.batch_size} is not divisible by {replicas} replicas"
        )
    # After the strategy: reading the checkpoint must not be the process's first TF call.
    saved_epoch = prepare_backup(backup_dir, config.discard_corrupt_backup)
    seed_everything(config.seed)
    tf = tensorflow()
    import tf_keras
    from recops_models.two_tower import InBatchSoftmaxLoss, build_training_model

    spec = fit_model_spec(
        layout,
        rows=rows,
        users=users,
        items=items,
        embedding_dim=config.embedding_dim,
        temperature=config.temperature,
        history_length=history_length_of(config.history_length, dataset_spec),
    )
    logq = item_log_probabilities(rows["item_id"].to_numpy()) if config.logq_correction else None
    features = training_inputs(
        spec, rows, logq, layout.seen_types, protocol, negative_types=layout.negative_types
    )
    # Negative events are histories, never positive pairs: the rows trained on.
    n_trained = len(features["user_idx"])
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
        scorer = valid_ndcg_scorer(
            spec,
            split=split,
            profiles=users,
            items=items,
            positive_types=layout.positive_types,
            seen_types=layout.seen_types,
            history_rows=rows,
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
        # Each epoch's loss and valid NDCG@10 reach the task's MLflow run as they happen.
        *filter(None, [epoch_logger("train.", chief=chief)]),
        *callbacks,
    ]
    resume_stopped = finished_state(state_dir, config, saved_epoch)
    started = time.perf_counter()
    if resume_stopped is not None:
        # Training had finished before the interruption: export the best weights.
        log.info("training had finished before the interruption; exporting its best epoch")
        model.set_weights(load_weights(state_dir / resume_stopped["weights_file"]))
        losses = [resume_stopped["loss"]]
    else:
        history = model.fit(dataset, epochs=config.epochs, callbacks=fit_callbacks, verbose=0)
        losses = history.history.get("loss", [])
    fit_seconds = time.perf_counter() - started
    # A backup taken after the last epoch leaves nothing to run; measure the loss then.
    final_loss = float(losses[-1]) if losses else float(model.evaluate(dataset, verbose=0))
    if not math.isfinite(final_loss):
        raise TrainingDivergedError(
            f"training diverged: final loss {final_loss}; lower learning_rate"
        )
    epochs_run = len(timer.durations)
    steps = n_trained // config.batch_size

    if chief:
        k = export_model(model.get_weights(), spec, items, staging)
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
        train_rows=n_trained,
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
        protocol=protocol,
        mixed_precision=mixed,
        loss_history=[float(v) for v in losses] if resume_stopped is None else [],
    )
    if chief:
        publish(staging, output_dir, ("split.parquet", "weights", "model"), result.to_dict())
        # A completed run needs no backup (and the next retry must not resume it).
        shutil.rmtree(backup_dir, ignore_errors=True)
    else:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("trained %s", result.to_dict())
    return result


def _epoch_timer() -> Any:
    """A Keras callback recording the restored step, the first epoch run and epoch times."""
    use_legacy_keras()
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
