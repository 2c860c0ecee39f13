"""The retrieval SavedModel's module: signatures, seen-item masking, history embedding.

Every retrieval export (float: ``two_tower.export_retrieval_model``; int8 / float16:
``quantized.export_quantized_retrieval_model``; the compressed models go through one of
the two) is a ``RetrievalModule``: it says how a known user is embedded and how
candidates are stored, and inherits the signatures:

- ``serving_default(user_id, <user features>, history_item_ids) -> item_ids [b, k],
  scores [b, k]``: candidates in the row's history score ``MASKED_SCORE`` before top-k.
- ``user_embedding(same inputs) -> embedding [b, dim]``.
- ``item_embeddings() -> item_ids [n], embeddings [n, dim]``.

**Users the model does not know.** A row whose ``user_id`` is out of the model's user
vocabulary (a user who arrived after training) but whose history holds at least one
candidate is embedded as the L2-normalised, recency-weighted mean of those candidates'
embeddings (weight ``HISTORY_DECAY ** slot``, slot 0 the newest, over the first
``HISTORY_POOL_MAX`` history entries): the items it just interacted with stand in for
its missing id row, so pushed events personalise it without retraining. A known user
gets its tower embedding: with a spec ``history_length``, the tower itself reads the
newest ``history_length`` entries (``RetrievalModule.history_indices``), so each pushed
event moves it too; without one, the history only masks. An unknown user with no
candidate in its history keeps the tower's out-of-vocabulary embedding.

Split out of ``recops_models.two_tower`` (which re-exports every name here). Importing
this module imports TensorFlow.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recops_models.contract import (
    HISTORY_DECAY,
    HISTORY_IDX,
    HISTORY_INPUT,
    HISTORY_PAD,
    MASKED_SCORE,
)
from recops_models.feature_defs import catalogue_ids, raw_inputs
from recops_models.tf_env import use_legacy_keras
from recops_models.tower_spec import TwoTowerSpec
from recops_models.vocab import OOV_INDEX

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.encoders import input_signature, recency_weights  # noqa: E402

__all__ = [
    "HISTORY_DECAY",
    "HISTORY_POOL_MAX",
    "RetrievalModule",
    "embed_in_batches",
    "history_weights",
    "int_table",
    "item_features_of",
    "mask_seen",
    "pool_history",
    "position_table",
    "serving_signature",
    "tower_candidates",
]

#: History entries pooled for an unknown user (the newest); beyond ~50 the weights are
#: under 0.9**50 ≈ 0.5% and only cost gathers.
HISTORY_POOL_MAX = 50


def int_table(keys: tuple[int, ...]) -> tf.lookup.StaticHashTable:
    """Raw int id -> 1-based index (0 = out of vocabulary), as exported lookups use."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keys) or [-1], tf.int64),
            tf.range(1, max(len(keys), 1) + 1, dtype=tf.int64),
        ),
        default_value=OOV_INDEX,
    )


def serving_signature(spec: TwoTowerSpec) -> list[tf.TensorSpec]:
    """Inputs of ``serving_default`` and ``user_embedding``: ``user_id``, each user
    feature named by the feature (``[None]``, int64 / tf.string / float32), then
    ``HISTORY_INPUT`` (``int64 [None, None]``)."""
    return [
        tf.TensorSpec([None], tf.int64, name="user_id"),
        *input_signature(spec.user_features),
        tf.TensorSpec([None, None], tf.int64, name=HISTORY_INPUT),
    ]


def position_table(candidate_ids: np.ndarray) -> tf.lookup.StaticHashTable:
    """Raw item id -> its row in the candidate matrix (``HISTORY_PAD`` when not a candidate)."""
    ids = np.asarray(candidate_ids, np.int64)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(ids.size, dtype=tf.int64)),
        default_value=HISTORY_PAD,
    )


def mask_seen(scores: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
    """Set to ``MASKED_SCORE`` each row's scores at its history's candidate positions.

    Only the ``m`` valid (row, position) pairs are scattered, in place of the scores: no
    ``[b, n, L]`` comparison and no second ``[b, n]`` buffer, so it stays cheap with
    10^5 candidates, 10^3 history entries and batches of thousands.

    Args:
        scores: ``float32 [b, n]``.
        positions: ``int64 [b, L]``: candidate rows of each row's history, negative for
            padding and for items that are not candidates.

    Returns:
        The masked scores ``[b, n]``.
    """
    pairs = tf.where(positions >= 0)  # [m, 2]: (row, history slot)
    columns = tf.gather_nd(positions, pairs)
    index = tf.stack([pairs[:, 0], tf.cast(columns, tf.int64)], axis=1)
    fill = tf.fill(tf.shape(columns), tf.constant(MASKED_SCORE, scores.dtype))
    return tf.tensor_scatter_nd_update(scores, index, fill)


def history_weights(positions: tf.Tensor) -> tf.Tensor:
    """Pooling weights ``float32 [b, L']`` of a history's candidate positions.

    Args:
        positions: ``int64 [b, L]``: candidate rows of each row's history, newest first,
            negative for padding and for items that are not candidates.

    Returns:
        ``HISTORY_DECAY ** slot`` at the first ``HISTORY_POOL_MAX`` slots that hold a
        candidate, 0 elsewhere (``L' = min(L, HISTORY_POOL_MAX)``).
    """
    return recency_weights(positions[:, :HISTORY_POOL_MAX] >= 0)


def pool_history(
    positions: tf.Tensor, rows: Callable[[tf.Tensor], tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor]:
    """The recency-weighted, L2-normalised mean of each row's history candidates.

    Args:
        positions: ``int64 [b, L]`` as for ``history_weights``.
        rows: Candidate rows ``int64 [...]`` -> their float32 embeddings ``[..., dim]``.

    Returns:
        ``(embeddings float32 [b, dim], whether the row had a candidate bool [b])``; a row
        without one gets zeros.
    """
    weights = history_weights(positions)
    index = tf.maximum(positions[:, :HISTORY_POOL_MAX], 0)
    pooled = tf.reduce_sum(rows(index) * tf.expand_dims(weights, -1), axis=1)
    return tf.math.l2_normalize(pooled, axis=-1), tf.reduce_any(weights > 0, axis=1)


class RetrievalModule(tf.Module, metaclass=abc.ABCMeta):  # type: ignore[misc]  # untyped base
    """The three retrieval signatures over a user embedding and stored candidates.

    Subclasses say how a user is embedded (``embed``) and how candidates are stored
    (``scores``, ``candidate_matrix``); the signatures, their input names (the spec's user
    features and ``HISTORY_INPUT``), the masking of seen items and their outputs are the
    same for every retrieval export.
    """

    def __init__(self, spec: TwoTowerSpec, candidate_ids: np.ndarray, k: int) -> None:
        super().__init__(name="recops_retrieval")
        self.user_table = int_table(spec.user_ids)
        self.history_length = int(spec.history_length)
        # The history encoding's item indices; only a spec with a history needs them.
        self.item_table = int_table(spec.item_ids) if spec.history_length else None
        # Variables, not constants: constants would be copied into every function graph.
        self.candidate_ids = tf.Variable(
            np.asarray(candidate_ids, np.int64), trainable=False, name="candidate_ids"
        )
        self.candidate_positions = position_table(np.asarray(candidate_ids, np.int64))
        self.k = int(k)
        signature = serving_signature(spec)
        names = tuple(str(s.name) for s in signature)

        # Inputs differ per dataset, so the functions take positional tensors and name
        # them from the signature: the saved signatures keep the TensorSpec names.
        def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            inputs = dict(zip(names, args, strict=True))
            seen = self.candidate_positions.lookup(inputs[HISTORY_INPUT])
            user = self.user_vectors(inputs, seen)
            top = tf.math.top_k(mask_seen(self.scores(user), seen), k=self.k)
            return {"item_ids": tf.gather(self.candidate_ids, top.indices), "scores": top.values}

        def user_embedding(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            inputs = dict(zip(names, args, strict=True))
            seen = self.candidate_positions.lookup(inputs[HISTORY_INPUT])
            return {"embedding": self.user_vectors(inputs, seen)}

        def item_embeddings() -> dict[str, tf.Tensor]:
            return {
                "item_ids": tf.identity(self.candidate_ids),
                "embeddings": self.candidate_matrix(),
            }

        self.serve = tf.function(serve, input_signature=signature)
        self.user_embedding = tf.function(user_embedding, input_signature=signature)
        self.item_embeddings = tf.function(item_embeddings, input_signature=[])

    def user_vectors(self, inputs: Mapping[str, tf.Tensor], seen: tf.Tensor) -> tf.Tensor:
        """The signatures' user embeddings: the tower's, or the history's for a row whose
        user is unknown to the model and whose history holds a candidate.

        Args:
            inputs: The raw signature inputs.
            seen: ``int64 [b, L]``: the candidate row of each history entry (negative
                when none).

        Returns:
            ``float32 [b, dim]``.
        """
        tower = self.embed(inputs)
        pooled, usable = pool_history(seen, self.candidate_rows)
        unknown = tf.equal(self.user_table.lookup(inputs["user_id"]), OOV_INDEX)
        use_history = tf.logical_and(unknown, usable)
        return tf.where(tf.expand_dims(use_history, -1), pooled, tf.cast(tower, tf.float32))

    def history_indices(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The tower's ``HISTORY_IDX`` of the raw history input: the newest
        ``history_length`` entries as dense item indices (0 = padding or unknown), as
        ``tower_spec.history_index`` computes them for training."""
        assert self.item_table is not None  # only called for a spec with a history
        raw = inputs[HISTORY_INPUT][:, : self.history_length]
        return self.item_table.lookup(raw)

    @abc.abstractmethod
    def embed(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The tower's user embeddings ``[b, dim]`` of the raw signature inputs (the
        history through ``history_indices`` when the spec has a history encoding)."""

    @abc.abstractmethod
    def scores(self, user: tf.Tensor) -> tf.Tensor:
        """``user @ candidates.T``."""

    @abc.abstractmethod
    def candidate_matrix(self) -> tf.Tensor:
        """Every candidate's embedding as float32 ``[n, dim]``."""

    def candidate_rows(self, index: tf.Tensor) -> tf.Tensor:
        """The float32 embeddings of candidate rows ``index`` (any shape, ``+ [dim]``).

        Subclasses gather from their storage; this default de-quantizes every candidate.
        """
        return tf.gather(self.candidate_matrix(), index)

    def save(self, export_dir: Path) -> None:
        """Write the SavedModel with its three signatures."""
        tf.saved_model.save(
            self,
            str(export_dir),
            signatures={
                "serving_default": self.serve,
                "user_embedding": self.user_embedding,
                "item_embeddings": self.item_embeddings,
            },
        )


class _FloatRetrievalModule(RetrievalModule):
    """The user tower (lookups inside) and float candidate embeddings."""

    def __init__(
        self,
        spec: TwoTowerSpec,
        user_tower: keras.Model,
        candidate_ids: np.ndarray,
        candidates: np.ndarray,
        k: int,
    ) -> None:
        super().__init__(spec, candidate_ids, k)
        self.user_tower = user_tower
        self.feature_names = tuple(f.name for f in spec.user_features)
        self.candidates = tf.Variable(
            np.asarray(candidates, np.float32), trainable=False, name="candidate_embeddings"
        )

    def embed(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        features = {"user_idx": self.user_table.lookup(inputs["user_id"])}
        features.update({name: inputs[name] for name in self.feature_names})
        if self.history_length:
            features[HISTORY_IDX] = self.history_indices(inputs)
        return self.user_tower(features, training=False)

    def scores(self, user: tf.Tensor) -> tf.Tensor:
        return tf.matmul(user, self.candidates, transpose_b=True)

    def candidate_matrix(self) -> tf.Tensor:
        return tf.identity(self.candidates)

    def candidate_rows(self, index: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.candidates, index)


def item_features_of(spec: TwoTowerSpec, items: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The item tower's inputs for a catalogue: ``item_idx`` plus raw item features.

    Raises:
        ValueError: If the catalogue is empty, has duplicate ids or lacks a feature.
    """
    item_ids = catalogue_ids(items, "retrieve")
    missing = [f.name for f in spec.item_features if f.name not in items]
    if missing:
        raise ValueError(f"items catalogue lacks the item feature column(s) {missing}")
    return {"item_idx": spec.item_index(item_ids), **raw_inputs(spec.item_features, items)}


def embed_in_batches(
    tower: Callable[..., Any], features: Mapping[str, np.ndarray], batch_size: int = 8192
) -> np.ndarray:
    """Run a tower over equal-length feature arrays a batch at a time; float32 rows."""
    n = len(next(iter(features.values())))
    chunks = [
        np.asarray(tower({k: v[s : s + batch_size] for k, v in features.items()}, training=False))
        for s in range(0, n, batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)


def tower_candidates(
    item_tower: Callable[..., Any],
    spec: TwoTowerSpec,
    items: Mapping[str, Any],
    batch_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the catalogue with an item tower (``towers_from_training_model``'s, or QAT's).

    Args:
        item_tower: A model taking ``item_inputs(spec)`` (raw item features).
        spec: The spec the tower was built from.
        items: Catalogue arrays ``item_id`` plus one per item feature (one row per item).
        batch_size: Items per call.

    Returns:
        ``(item_ids int64 [n], embeddings float32 [n, dim])``.

    Raises:
        ValueError: If the catalogue is empty, has duplicate ids or lacks a feature.
    """
    features = item_features_of(spec, items)
    item_ids = np.asarray(items["item_id"], np.int64)
    return item_ids, embed_in_batches(item_tower, features, batch_size)
