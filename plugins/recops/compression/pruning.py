"""Magnitude pruning of the trained two-tower under the distribution strategy.

``prune_model`` is the pruning fine-tune the ``prune_*`` variants build on. ``compress``
(``CompressConfig -> CompressResult``) is the original single-variant pruning step: the
pipeline now fans out ``compress_variant`` instead, and only its unit tests call it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from recops_models.tf_env import use_legacy_keras

from recops.compression.footprint import directory_bytes, gzip_bytes
from recops.compression.records import MissingInputError
from recops.config import RETRIEVAL_K
from recops.errors import ParamError
from recops.io import SUCCESS_MARKER
from recops.records import Record
from recops.training import (
    CONFIG_FILE,
    ITEM_COLUMNS,
    item_log_probabilities,
    latest_rows,
    load_completed,
    make_dataset,
    prepare_output_dir,
    publish,
    read_parquet_columns,
    read_training_set,
    seed_everything,
    select_strategy,
    train_rows,
)

__all__ = ["CompressConfig", "CompressResult", "compress", "prune_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CompressConfig(Record):
    """What to prune and how.

    Attributes:
        train_dir: A completed training folder, i.e. ``TrainConfig.output_dir`` (the
            parent of ``TrainResult.model_dir``). Its ``weights/`` are pruned and its
            ``model/`` is the float baseline for ``float_gzip_bytes``.
        training_set_uri: The training set the model was trained on.
        split_uri: The split written by training; only train rows are used.
        users_uri: users.parquet (kept so the run is self-described).
        items_uri: items.parquet, the candidate catalogue embedded at export.
        output_dir: Folder owned by this run.
        target_sparsity: Fraction of each pruned weight tensor set to zero.
        fine_tune_epochs: Epochs of fine-tuning while the sparsity ramps up.
        batch_size: Global batch size.
        learning_rate: Adam learning rate of the fine-tune.
        replicas: Logical CPU devices to mirror over when there is no GPU.
        seed: Seed for shuffling.
    """

    train_dir: str
    training_set_uri: str
    split_uri: str
    users_uri: str
    items_uri: str
    output_dir: str
    target_sparsity: float = 0.5
    # On ml-100k, 3 epochs at 0.005 recover about half of the quality 1 epoch at 0.001 loses.
    fine_tune_epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 0.005
    replicas: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sparsity < 1.0:
            raise ParamError(
                f"CompressConfig.target_sparsity={self.target_sparsity!r} must be in (0, 1)"
            )
        for name in ("fine_tune_epochs", "batch_size", "replicas"):
            if getattr(self, name) < 1:
                raise ParamError(f"CompressConfig.{name}={getattr(self, name)!r} must be >= 1")
        if not self.learning_rate > 0:
            raise ParamError(f"CompressConfig.learning_rate={self.learning_rate!r} must be > 0")


@dataclass(frozen=True, kw_only=True)
class CompressResult(Record):
    """The pruned model and what pruning bought.

    Attributes:
        model_dir: Pruned, stripped retrieval SavedModel.
        sparsity: Measured fraction of zeros in the pruned tensors (Dense kernels and
            Embedding tables).
        saved_model_bytes: Size of the pruned SavedModel folder on disk.
        gzip_bytes: Size of the pruned SavedModel folder as a .tar.gz.
        float_gzip_bytes: Size of the float SavedModel folder as a .tar.gz.
        params: Parameters of the two-tower model.
        nonzero_params: Parameters that are not zero after pruning.
        final_loss: Mean training loss of the last fine-tune epoch.
        strategy: Distribution strategy class name.
        replicas: Replicas in sync.
    """

    model_dir: str
    sparsity: float
    saved_model_bytes: int
    gzip_bytes: int
    float_gzip_bytes: int
    params: int
    nonzero_params: int
    final_loss: float
    strategy: str
    replicas: int


def prune_model(
    *,
    weights_dir: Path,
    rows: Any,
    logq: np.ndarray | None,
    target_sparsity: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    replicas: int,
    seed: int,
) -> tuple[Any, Any, float, str, int]:
    """Prune the trained model under the distribution strategy; return a plain copy.

    ``prune_low_magnitude`` is applied through ``clone_model`` inside
    ``strategy.scope()`` (TF-MOT wrappers must be created there), fine-tuned with
    ``UpdatePruningStep``, stripped, and copied by layer name into a plain model.

    Returns:
        ``(plain model, spec, final loss, strategy name, replicas in sync)``.

    Raises:
        ParamError: If ``batch_size`` does not divide over the replicas in sync.
    """
    use_legacy_keras()
    strategy, strategy_name, in_sync = select_strategy(replicas)
    if batch_size % in_sync:
        raise ParamError(f"batch_size={batch_size} is not divisible by {in_sync} replicas")
    seed_everything(seed)
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from recops_models.compressors import copy_into_plain, pruning_schedule
    from recops_models.two_tower import InBatchSoftmaxLoss, load_trained_model, model_inputs

    steps = len(rows) // batch_size
    schedule = pruning_schedule(steps * epochs, target_sparsity)

    def prune_dense_and_embedding(layer: Any) -> Any:
        if isinstance(layer, tf_keras.layers.Dense | tf_keras.layers.Embedding):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    with strategy.scope():
        base, spec = load_trained_model(weights_dir)
        pruned = tf_keras.models.clone_model(base, clone_function=prune_dense_and_embedding)
        pruned.compile(
            optimizer=tf_keras.optimizers.Adam(learning_rate=learning_rate),
            loss=InBatchSoftmaxLoss(),
        )
    features = model_inputs(spec, {c: rows[c].to_numpy() for c in rows.columns}, logq)
    dataset = make_dataset(features, batch_size=batch_size, seed=seed)
    history = pruned.fit(
        dataset,
        epochs=epochs,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=0,
    )
    # The export must not hold mirrored variables.
    plain = copy_into_plain(tfmot.sparsity.keras.strip_pruning(pruned), spec)
    return plain, spec, float(history.history["loss"][-1]), strategy_name, in_sync


def _kernel_sparsity(model: Any) -> float:
    """Fraction of zeros in the Dense kernels and Embedding tables (what TF-MOT prunes)."""
    import tf_keras

    zeros, total = 0, 0
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Dense | tf_keras.layers.Embedding):
            kernel = layer.weights[0].numpy()
            zeros += int(np.count_nonzero(kernel == 0))
            total += kernel.size
    return zeros / total if total else 0.0


def compress(config: CompressConfig) -> CompressResult:
    """Prune, fine-tune, strip and export the trained model.

    Args:
        config: The trained model, data and pruning settings.

    Returns:
        The result; the stored one when ``output_dir`` is already complete.

    Raises:
        MissingInputError: If ``train_dir`` is not a completed training folder (a
            ``FileNotFoundError``).
        ValueError: On bad input data or a completed ``output_dir`` of another config.
    """
    output_dir = Path(config.output_dir)
    config_dict = config.to_dict()
    done = load_completed(output_dir, config_dict)
    if done is not None:
        log.info("%s is complete; returning its result without pruning", output_dir)
        return CompressResult.from_dict(done)
    train_dir = Path(config.train_dir)
    if not (train_dir / SUCCESS_MARKER).is_file():
        raise MissingInputError(f"train_dir {train_dir} is not a completed training run")
    train_config = json.loads((train_dir / CONFIG_FILE).read_text())
    staging = prepare_output_dir(output_dir, config_dict, backup=None)

    frame = read_training_set(config.training_set_uri)
    split = read_parquet_columns(config.split_uri, ("user_id", "item_id", "split"), "split")
    rows = train_rows(frame, split)
    items = latest_rows(read_parquet_columns(config.items_uri, ITEM_COLUMNS, "items"), "item_id")
    logq = (
        item_log_probabilities(rows["item_id"].to_numpy())
        if train_config.get("logq_correction")
        else None
    )
    plain, spec, final_loss, strategy_name, replicas = prune_model(
        weights_dir=train_dir / "weights",
        rows=rows,
        logq=logq,
        target_sparsity=config.target_sparsity,
        epochs=config.fine_tune_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        replicas=config.replicas,
        seed=config.seed,
    )
    from recops_models.two_tower import export_retrieval_model

    all_weights = [w.numpy() for w in plain.weights]
    export_retrieval_model(
        model=plain,
        spec=spec,
        items={c: items[c].to_numpy() for c in ("item_id", "genre_mask", "release_year")},
        export_dir=staging / "model",
        k=RETRIEVAL_K,
    )
    result = CompressResult(
        model_dir=str(output_dir / "model"),
        sparsity=_kernel_sparsity(plain),
        saved_model_bytes=directory_bytes(staging / "model"),
        gzip_bytes=gzip_bytes(staging / "model"),
        float_gzip_bytes=gzip_bytes(train_dir / "model"),
        params=int(sum(w.size for w in all_weights)),
        nonzero_params=int(sum(np.count_nonzero(w) for w in all_weights)),
        final_loss=final_loss,
        strategy=strategy_name,
        replicas=replicas,
    )
    publish(staging, output_dir, ("model",), result.to_dict())
    log.info("compressed %s", result.to_dict())
    return result
