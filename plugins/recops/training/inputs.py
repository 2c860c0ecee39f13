"""What the two-tower is fed: its spec, its inputs, the logQ and the tf.data pipelines.

The model code (``recops_models.two_tower``) fits the feature vocabularies and turns
columns into model inputs; the functions here are the stage's only doors to it, so the
training, early-stopping and compression code never names a feature:

- ``fit_model_spec``: the ``TwoTowerSpec`` of a layout, fitted on the users and items
  tables restricted to the train split's entities;
- ``training_inputs``, ``user_tower_inputs``, ``item_tower_inputs``: the inputs of the
  training model and of each tower, built from frames holding the spec's feature columns;
- ``catalogue``: the ``item_id`` + item feature arrays the export embeds.

``make_dataset`` builds the training stream of the two-tower; ``indexed_dataset`` is the
general form (any nest of in-memory arrays) that the ranker uses too. TensorFlow is
imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from recops_models.tf_env import tensorflow, use_legacy_keras

from recops.errors import ParamError
from recops.splits import pad_histories, positive_rows, preceding_histories

if TYPE_CHECKING:
    from recops.layout import Layout

__all__ = [
    "catalogue",
    "fit_model_spec",
    "indexed_dataset",
    "item_log_probabilities",
    "item_tower_inputs",
    "make_dataset",
    "training_inputs",
    "user_tower_inputs",
]


def fit_model_spec(
    layout: Layout,
    *,
    rows: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    embedding_dim: int,
    temperature: float,
    history_length: int = 0,
) -> Any:
    """The two-tower spec: id vocabularies of the train rows, features of the tables.

    Args:
        layout: The dataset's layout (which features, of what kind).
        rows: The train rows (``user_id``, ``item_id``, ...).
        users: The users table, one row per user (``recops.tables.read_users``).
        items: The items table, one row per item (``recops.tables.read_items``).
        embedding_dim: Output size of both towers.
        temperature: Softmax temperature of the in-batch logits.
        history_length: History entries the user tower pools (0: no history encoding).

    Returns:
        The ``TwoTowerSpec``.
    """
    from recops_models.two_tower import TwoTowerSpec

    return TwoTowerSpec.from_tables(
        train=rows,
        users=users,
        items=items,
        user_features=layout.user_features,
        item_features=layout.item_features,
        embedding_dim=embedding_dim,
        temperature=temperature,
        history_length=history_length,
    )


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def training_inputs(
    spec: Any,
    rows: pd.DataFrame,
    logq: np.ndarray | None = None,
    seen_types: Sequence[str] = (),
    protocol: str = "temporal",
    negative_types: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """The training model's inputs for ``rows`` (ids, both sides' features, logQ).

    With a history encoding, each row's history (``splits.preceding_histories``) is what
    evaluation under ``protocol`` will hand the tower: the user's items of earlier rows
    among ``rows`` for ``temporal`` (what serving knows at any time), the user's newest
    other items for ``random`` (whose holdout sits anywhere in time). Seen types only,
    when ``rows`` has ``event_type``; the row order stands in for time without
    ``event_timestamp``.

    Rows of the ``negative_types`` (a skip: the user did not want the item) are left
    out of the result, so they never become a positive pair; they still count in the
    other rows' histories, as the item is in the user's served history too. ``logq``
    is then recomputed over the rows kept.
    """
    from recops_models.two_tower import HISTORY_INPUT, model_inputs

    columns = _columns(rows)
    targets = positive_rows(rows, negative_types)
    if spec.history_length:
        times = (
            rows["event_timestamp"].to_numpy()
            if "event_timestamp" in rows.columns
            else np.arange(len(rows))
        )
        eligible = (
            rows["event_type"].isin(list(seen_types)).to_numpy()
            if seen_types and "event_type" in rows.columns
            else None
        )
        columns[HISTORY_INPUT] = preceding_histories(
            rows["user_id"].to_numpy(),
            rows["item_id"].to_numpy(),
            times,
            length=spec.history_length,
            eligible=eligible,
            before_only=protocol != "random",
        )
    if targets is not None:
        columns = {name: values[targets] for name, values in columns.items()}
        if logq is not None:
            logq = item_log_probabilities(columns["item_id"])
    return dict(model_inputs(spec, columns, logq))


def user_tower_inputs(
    spec: Any, users: pd.DataFrame, histories: Sequence[np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The user tower's inputs for ``users``: ``user_idx``, the raw user features and,
    with a history encoding, ``HISTORY_IDX`` of ``histories``.

    A missing feature value is valid (``""`` or NaN: out of vocabulary, the missing flag).

    Args:
        spec: The model's ``TwoTowerSpec``.
        users: One row per user: ``user_id`` and the user feature columns.
        histories: Each user's seen items, most recent first (``splits.known_histories``);
            None is an empty history for everyone.
    """
    from recops_models.feature_defs import raw_inputs
    from recops_models.two_tower import HISTORY_IDX, history_index

    out = {
        "user_idx": spec.user_index(users["user_id"].to_numpy(np.int64)),
        **raw_inputs(spec.user_features, _columns(users)),
    }
    if spec.history_length:
        empty = [np.zeros(0, np.int64)] * len(users)
        rows = empty if histories is None else [h[: spec.history_length] for h in histories]
        out[HISTORY_IDX] = history_index(spec, pad_histories(rows))
    return out


def item_tower_inputs(spec: Any, items: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The item tower's inputs for a catalogue: ``item_idx`` plus the raw item features.

    Args:
        spec: The model's ``TwoTowerSpec``.
        items: ``item_id`` and the item feature arrays (a frame or a mapping of arrays).
    """
    from recops_models.two_tower import item_features_of

    columns = _columns(items) if isinstance(items, pd.DataFrame) else items
    return dict(item_features_of(spec, columns))


def catalogue(spec: Any, items: pd.DataFrame) -> dict[str, np.ndarray]:
    """``item_id`` and the spec's item feature arrays: the candidates an export embeds."""
    names = ["item_id", *(f.name for f in spec.item_features)]
    return {name: items[name].to_numpy() for name in names}


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
    n = len(next(iter(features.values()))) if features else 0
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
