"""What the two-tower is fed: the logQ of in-batch sampling and the tf.data pipelines.

``make_dataset`` builds the training stream of the two-tower; ``indexed_dataset`` is the
general form (any nest of in-memory arrays) that the ranker uses too. TensorFlow is
imported inside the functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from recops_models.tf_env import tensorflow, use_legacy_keras

from recops.errors import ParamError

__all__ = ["indexed_dataset", "item_log_probabilities", "make_dataset"]


def item_log_probabilities(item_id: np.ndarray) -> np.ndarray:
    """Log of each row's item frequency among the rows: the in-batch sampling logQ."""
    _, inverse, counts = np.unique(item_id, return_inverse=True, return_counts=True)
    return np.log(counts[inverse] / item_id.size).astype(np.float32)


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
        ParamError: If there are fewer rows than one batch (a ``ValueError``).
    """
    use_legacy_keras()
    n = len(features["user_idx"])
    if n < batch_size:
        raise ParamError(f"batch_size={batch_size} exceeds the {n} training rows")
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
    tf = tensorflow()

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
