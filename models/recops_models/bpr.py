"""BPR-MF baseline in tf_keras: user and item embeddings trained with the BPR pairwise loss.

Importing this module imports TensorFlow. It is a benchmark baseline (RecBole's BPR,
embedding 64, uniform negatives), not served: ``fit_bpr`` returns the factors as numpy
arrays and ``BPRModel.scores`` ranks the catalogue with a dot product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recops_models.tf_env import use_legacy_keras
from recops_models.vocab import rows_for_ids

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["BPRLoss", "BPRModel", "build_bpr_model", "fit_bpr", "sample_negatives"]


class BPRLoss(keras.losses.Loss):  # type: ignore[misc]  # untyped base
    """``-log sigmoid(score(u, pos) - score(u, neg))``; ``y_true`` is ignored."""

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Per-example loss from the score margin ``y_pred`` ``[batch, 1]``."""
        return -tf.math.log_sigmoid(y_pred)


def build_bpr_model(n_users: int, n_items: int, dim: int, l2: float = 0.0) -> keras.Model:
    """Functional BPR model over dense indices (0 = unknown).

    Args:
        n_users: Users in the vocabulary.
        n_items: Items in the vocabulary.
        dim: Embedding size.
        l2: L2 penalty on the embeddings of each batch.

    Returns:
        A model taking ``user_idx, pos_idx, neg_idx`` and returning the score margin
        ``[batch, 1]``.
    """
    reg = keras.regularizers.l2(l2) if l2 else None
    user_idx, pos_idx, neg_idx = (
        keras.Input(shape=(), dtype=tf.int64, name=name)
        for name in ("user_idx", "pos_idx", "neg_idx")
    )
    users = keras.layers.Embedding(
        n_users + 1,
        dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.1),
        embeddings_regularizer=reg,
        name="users",
    )
    items = keras.layers.Embedding(
        n_items + 1,
        dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.1),
        embeddings_regularizer=reg,
        name="items",
    )
    user = users(user_idx)
    margin = keras.layers.Dot(axes=1, name="pos_score")([user, items(pos_idx)])
    negative = keras.layers.Dot(axes=1, name="neg_score")([user, items(neg_idx)])
    margin = keras.layers.Subtract(name="margin")([margin, negative])
    return keras.Model(
        inputs={"user_idx": user_idx, "pos_idx": pos_idx, "neg_idx": neg_idx},
        outputs=margin,
        name="bpr",
    )


def sample_negatives(
    user_idx: np.ndarray, item_idx: np.ndarray, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One uniform negative item index (1..n_items) per row, avoiding the user's items.

    Collisions are redrawn a few times; the few that remain are kept (harmless noise).

    Args:
        user_idx: Dense user index of each positive row.
        item_idx: Dense item index of each positive row.
        n_items: Items in the vocabulary.
        rng: Source of the draws.

    Returns:
        Int64 negative item indices, one per row.
    """
    seen = set((user_idx * (n_items + 1) + item_idx).tolist())
    negatives = rng.integers(1, n_items + 1, user_idx.size)
    for _ in range(5):
        keys = user_idx * (n_items + 1) + negatives
        clash = np.fromiter((k in seen for k in keys.tolist()), bool, keys.size)
        if not clash.any():
            break
        negatives[clash] = rng.integers(1, n_items + 1, int(clash.sum()))
    return negatives


@dataclass(frozen=True)
class BPRModel:
    """Trained factors keyed by raw ids.

    Attributes:
        user_ids: Sorted raw user ids, one per row of ``user_factors``.
        item_ids: Sorted raw item ids, one per row of ``item_factors``.
        user_factors: User embeddings ``[len(user_ids), dim]``.
        item_factors: Item embeddings ``[len(item_ids), dim]``.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    def scores(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Dot-product scores of users against items.

        Args:
            user_ids: Raw user ids.
            item_ids: Raw item ids, in score column order.

        Returns:
            Scores ``[len(user_ids), len(item_ids)]``; unknown ids score 0.
        """
        users = rows_for_ids(self.user_ids, self.user_factors, user_ids)
        items = rows_for_ids(self.item_ids, self.item_factors, item_ids)
        return np.asarray(users @ items.T)


def fit_bpr(
    user_id: np.ndarray,
    item_id: np.ndarray,
    *,
    embedding_dim: int = 64,
    epochs: int = 30,
    batch_size: int = 2048,
    learning_rate: float = 0.005,
    l2: float = 1e-5,
    seed: int = 0,
) -> BPRModel:
    """Train BPR-MF on (user, item) interactions, drawing fresh negatives every epoch.

    Args:
        user_id: Raw user id of each train interaction.
        item_id: Raw item id of each train interaction.
        embedding_dim: Factor size (64, as RecBole's published run).
        epochs: Passes over the interactions.
        batch_size: Rows per step.
        learning_rate: Adam learning rate.
        l2: L2 penalty on the embeddings in each batch.
        seed: Seed for weights, shuffling and negatives.

    Returns:
        The trained factors.

    Raises:
        ValueError: If there are no interactions or the arrays differ in length.
    """
    user_id = np.asarray(user_id, dtype=np.int64)
    item_id = np.asarray(item_id, dtype=np.int64)
    if user_id.size == 0 or user_id.size != item_id.size:
        raise ValueError(
            f"fit_bpr needs equal, non-empty user_id ({user_id.size}) and item_id "
            f"({item_id.size}) arrays"
        )
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    user_vocab, user_idx = np.unique(user_id, return_inverse=True)
    item_vocab, item_idx = np.unique(item_id, return_inverse=True)
    user_idx, item_idx = user_idx.astype(np.int64) + 1, item_idx.astype(np.int64) + 1
    model = build_bpr_model(user_vocab.size, item_vocab.size, embedding_dim, l2)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=BPRLoss())
    # All epochs' shuffles and fresh negatives in one array and one ``fit`` call: the
    # per-call Keras overhead would dominate on small data.
    orders = [rng.permutation(user_idx.size) for _ in range(epochs)]
    users = np.concatenate([user_idx[o] for o in orders])
    positives = np.concatenate([item_idx[o] for o in orders])
    features = {
        "user_idx": users,
        "pos_idx": positives,
        "neg_idx": sample_negatives(users, positives, item_vocab.size, rng),
    }
    model.fit(
        features,
        np.zeros(users.size, np.float32),
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return BPRModel(
        user_ids=user_vocab,
        item_ids=item_vocab,
        user_factors=model.get_layer("users").get_weights()[0][1:],
        item_factors=model.get_layer("items").get_weights()[0][1:],
    )
