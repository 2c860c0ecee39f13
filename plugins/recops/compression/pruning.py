"""Magnitude pruning of the trained two-tower under the distribution strategy.

``prune_model`` is the pruning fine-tune the ``prune_*`` variants build on
(``recops.compression.builders``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from recops_models.tf_env import use_legacy_keras

from recops.errors import ParamError
from recops.splits import positive_rows
from recops.tracking_epochs import epoch_logger
from recops.training import (
    make_dataset,
    seed_everything,
    select_strategy,
)
from recops.training.inputs import training_inputs

__all__ = ["prune_model"]

log = logging.getLogger(__name__)


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
    seen_types: Sequence[str] = (),
    protocol: str = "random",
    negative_types: Sequence[str] = (),
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
    from recops_models.two_tower import InBatchSoftmaxLoss, load_trained_model

    kept = positive_rows(rows, negative_types)
    # The schedule ends where fine-tuning does: on the rows trained on (no negatives).
    steps = (len(rows) if kept is None else int(kept.sum())) // batch_size
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
    features = training_inputs(spec, rows, logq, seen_types, protocol, negative_types)
    dataset = make_dataset(features, batch_size=batch_size, seed=seed)
    history = pruned.fit(
        dataset,
        epochs=epochs,
        callbacks=[
            tfmot.sparsity.keras.UpdatePruningStep(),
            *filter(None, [epoch_logger("fine_tune.")]),  # live, when the task is tracked
        ],
        verbose=0,
    )
    # The export must not hold mirrored variables.
    plain = copy_into_plain(tfmot.sparsity.keras.strip_pruning(pruned), spec)
    return plain, spec, float(history.history["loss"][-1]), strategy_name, in_sync
