"""TFLite edge artifacts of the retrieval model: conversion and interpreter scoring.

TFLite cannot run the string lookups, splits and hashing of the SavedModel, so the
converted function takes **already-indexed** inputs, the outputs of the model's index
layers (``recops_models.encoders``), named like the SavedModel's inputs:

    serving_default(user_idx: int64[b],
                    <categorical>: int64[b] (vocabulary position, 0 = unknown),
                    <multi-valued or text>: int64[b, n] (positions / word hashes, 0-padded),
                    <numeric>: float32[b, 2] ([standardised value, missing flag]),
                    [history_idx: int64[b, L'] (the history's dense item indices, newest
                     first, 0-padded; only for a spec with a ``history_length``)],
                    history_item_ids: int64[b, L] (raw seen item ids, -1-padded))
        -> item_ids int64[b, k], scores float32[b, k], embedding float32[b, dim]

As in the SavedModel, candidates in a row's ``history_item_ids`` score ``MASKED_SCORE``,
and a row whose ``user_idx`` is out of vocabulary (0: a user the model does not know) but
whose history holds a candidate is embedded as the recency-weighted mean of those
candidates' embeddings (``recops_models.retrieval_export``). The full ``int8`` mode
calibrates that path on each calibration row's own top candidates as a stand-in history
(``_calibration_history``); a conversion returning the whole catalogue (``k`` too close
to it) calibrates without history, so there the unknown-user path is coarser.

``edge_inputs(spec, frame, history)`` computes those inputs from a frame of raw users
(``user_id`` plus the user feature columns) and their raw histories, with the model's own
index layers and item vocabulary, so callers need not know the features. The candidate
embeddings are baked in as a constant, so the converter quantizes them with the rest of
the weights.

Importing this module imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from recops_models.tf_env import use_legacy_keras

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.encoders import index_features, indexed_inputs  # noqa: E402
from recops_models.feature_defs import raw_inputs  # noqa: E402
from recops_models.retrieval_export import HISTORY_POOL_MAX, history_weights  # noqa: E402
from recops_models.two_tower import (  # noqa: E402
    HISTORY_IDX,
    HISTORY_INPUT,
    HISTORY_PAD,
    MASKED_SCORE,
    TwoTowerSpec,
    build_tower,
    history_index,
    history_input,
    user_inputs,
)

__all__ = [
    "TFLITE_MODES",
    "TFLiteScorer",
    "convert_retrieval_tflite",
    "edge_input_names",
    "edge_inputs",
    "edge_user_tower",
]

#: ``dynamic``: int8 weights, float activations; ``float16``: fp16 weights; ``int8``: int8
#: weights and activations calibrated on a representative dataset; ``qat``: a model
#: trained with fake-quant nodes, converted with its learnt ranges.
TFLITE_MODES = ("dynamic", "float16", "int8", "qat")


def edge_input_names(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The edge user tower's input names: ``user_idx`` then each user feature."""
    return user_inputs(spec)


def edge_inputs(
    spec: TwoTowerSpec, frame: Mapping[str, Any], history: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The indexed inputs of the edge model for raw users.

    Args:
        spec: The model's spec (``spec.json`` beside the artifact).
        frame: ``user_id`` plus one column per user feature (a DataFrame or a mapping
            of arrays); unknown ids and values and missing numerics are fine.
        history: Raw seen item ids ``[b, L]``, newest first, ``HISTORY_PAD``-padded, for
            a spec with a history encoding; None encodes an empty history.

    Returns:
        Arrays keyed by ``edge_input_names(spec)``.

    Raises:
        ValueError: If a user feature column is missing.
    """
    missing = [f.name for f in spec.user_features if f.name not in frame]
    if missing:
        raise ValueError(f"the users frame lacks the user feature column(s) {missing}")
    raw = raw_inputs(spec.user_features, frame)
    user_ids = np.asarray(frame["user_id"], np.int64)
    out = {"user_idx": spec.user_index(user_ids), **index_features(spec.user_features, raw)}
    if spec.history_length:
        rows = np.full((user_ids.size, 1), HISTORY_PAD, np.int64) if history is None else history
        out[HISTORY_IDX] = history_index(spec, rows)
    return out


def edge_user_tower(model: keras.Model, spec: TwoTowerSpec) -> keras.Model:
    """The user tower fed indexed inputs, with the training model's weights.

    Args:
        model: A training model built from ``spec`` (plain or stripped, original names).
        spec: Its spec.

    Returns:
        A model taking ``edge_inputs``' arrays and returning the user embedding.
    """
    id_input = keras.Input(shape=(), dtype=tf.int64, name="user_idx")
    indexed = indexed_inputs(spec.user_features)
    if spec.history_length:
        indexed[HISTORY_IDX] = history_input()
    tower = keras.Model(
        inputs={"user_idx": id_input, **indexed},
        outputs=build_tower(spec, "user", id_input, indexed),
        name="edge_user_tower",
    )
    for layer in tower.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return tower


def _signature(user_tower: keras.Model) -> list[tf.TensorSpec]:
    """Named specs of the tower's inputs, in ``user_idx``-first order."""
    inputs = user_tower.input
    return [tf.TensorSpec(t.shape, t.dtype, name=name) for name, t in inputs.items()]


class _EdgeModule(tf.Module):  # type: ignore[misc]  # untyped base
    def __init__(
        self, user_tower: keras.Model, candidate_ids: np.ndarray, candidates: np.ndarray, k: int
    ) -> None:
        super().__init__(name="recops_edge")
        self.user_tower = user_tower
        self.candidate_ids = tf.constant(np.asarray(candidate_ids, np.int64))
        self.candidates = tf.constant(np.asarray(candidates, np.float32))
        self.positions = _dense_positions(np.asarray(candidate_ids, np.int64))
        self.k = k
        tower_signature = _signature(user_tower)
        names = tuple(str(s.name) for s in tower_signature)
        signature = [*tower_signature, tf.TensorSpec([None, None], tf.int64, name=HISTORY_INPUT)]

        # Inputs differ per dataset: positional tensors, named from the signature.
        def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            *tower_args, history = args
            inputs = dict(zip(names, tower_args, strict=True))
            user = self.user_tower(inputs, training=False)
            user = self.with_history(user, inputs["user_idx"], history)
            scores = tf.matmul(user, self.candidates, transpose_b=True)
            index, values, masked = self.top_unseen(scores, history)
            return {
                "item_ids": tf.gather(self.candidate_ids, index),
                "scores": tf.where(masked, tf.constant(MASKED_SCORE, tf.float32), values),
                "embedding": user,
            }

        self.serve = tf.function(serve, input_signature=signature)

    def top_unseen(
        self, scores: tf.Tensor, history: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The top k by score with each row's seen candidates moved last.

        Full int8 conversion quantizes every float tensor on 256 levels calibrated on
        the representative data, so a ``MASKED_SCORE`` written into the scores would
        either be clipped (ties with the lowest real scores) or crush their resolution.
        The mask therefore works on integers: the top ``k + L`` by score, re-ordered by
        ``rank + width * seen``, so seen items are dropped while ``k`` unseen remain.

        Returns:
            ``(candidate rows [b, k], their scores, whether each was seen)``.
        """
        n = int(self.candidates.shape[0])
        seen = self.seen(history, tf.shape(scores)[0], n)
        width = tf.minimum(n, self.k + tf.shape(history)[1])
        top = tf.math.top_k(scores, k=width)
        seen_top = tf.gather(seen, top.indices, batch_dims=1)
        key = tf.expand_dims(tf.range(width), 0) + width * seen_top
        order = tf.math.top_k(-key, k=self.k).indices
        index = tf.gather(top.indices, order, batch_dims=1)
        values = tf.gather(top.values, order, batch_dims=1)
        return index, values, tf.gather(seen_top, order, batch_dims=1) > 0

    def with_history(self, user: tf.Tensor, user_idx: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """``user``, except for rows of unknown users (index 0) whose history holds a
        candidate: those get the recency-weighted mean of the candidates' embeddings."""
        capped = history[:, :HISTORY_POOL_MAX]
        n = int(self.candidates.shape[0])
        if self.positions is None:
            hit = tf.cast(tf.equal(tf.expand_dims(capped, -1), self.candidate_ids), tf.float32)
            # [b, L, n] @ [n, dim] as one 2-D matmul (a sparse id space: small edge calls).
            flat = tf.matmul(tf.reshape(hit, [-1, n]), self.candidates)
            vectors = tf.reshape(flat, tf.concat([tf.shape(capped), [-1]], axis=0))
            positions = tf.where(tf.reduce_max(hit, axis=2) > 0, 0, -1)
        else:
            positions = self.dense_positions(capped)
            vectors = tf.gather(self.candidates, tf.maximum(positions, 0))
        weights = history_weights(positions)
        pooled = tf.math.l2_normalize(
            tf.reduce_sum(vectors * tf.expand_dims(weights, -1), axis=1), axis=-1
        )
        use = tf.logical_and(tf.equal(user_idx, 0), tf.reduce_any(weights > 0, axis=1))
        return tf.where(tf.expand_dims(use, -1), pooled, user)

    def dense_positions(self, history: tf.Tensor) -> tf.Tensor:
        """Candidate row of each raw history id through the dense map (-1 when none)."""
        dense = self.positions
        assert dense is not None  # only called when the ids are dense
        size = int(dense.shape[0])
        inside = tf.logical_and(history >= 0, history < size)
        return tf.where(inside, tf.gather(dense, tf.where(inside, history, 0)), -1)

    def seen(self, history: tf.Tensor, rows: tf.Tensor, n: int) -> tf.Tensor:
        """``int32 [b, n]``: 1 where the candidate is in the row's raw-id history.

        TFLite has no hash tables: item ids are interned dense, so a dense id -> row array
        maps them; a sparse id space falls back to comparing every history entry with
        every candidate (``[b, L, n]``, fine for the edge's single-user calls).
        """
        if self.positions is None:
            hit = tf.equal(tf.expand_dims(history, -1), self.candidate_ids)
            return tf.cast(tf.reduce_any(hit, axis=1), tf.int32)
        positions = self.dense_positions(history)
        pairs = tf.where(positions >= 0)
        index = tf.stack([pairs[:, 0], tf.gather_nd(positions, pairs)], axis=1)
        counts = tf.scatter_nd(
            index, tf.ones(tf.shape(pairs)[:1], tf.int32), tf.stack([tf.cast(rows, tf.int64), n])
        )
        return tf.minimum(counts, 1)


def _dense_positions(candidate_ids: np.ndarray) -> tf.Tensor | None:
    """Candidate row by raw item id (``HISTORY_PAD`` where none) as a dense array, or
    None when the ids are too sparse for one (over 4 slots per candidate)."""
    if candidate_ids.size == 0 or candidate_ids.min() < 0:
        return None
    size = int(candidate_ids.max()) + 1
    if size > 4 * candidate_ids.size + 1024:
        return None
    dense = np.full(size, HISTORY_PAD, np.int64)
    dense[candidate_ids] = np.arange(candidate_ids.size)
    return tf.constant(dense)


#: History entries per calibration row (see ``_calibration_history``).
_CALIBRATION_HISTORY = 10


def _calibration_history(
    user_tower: keras.Model,
    representative: Mapping[str, np.ndarray],
    signature: list[tf.TensorSpec],
    candidate_ids: np.ndarray,
    candidates: np.ndarray,
    k: int,
) -> np.ndarray:
    """Histories for the int8 calibration rows: each row's own top candidates.

    The unknown-user pooling (``_EdgeModule.with_history``) needs its activations
    calibrated on real-looking histories, items close to one another as a user's are:
    the row's top ``_CALIBRATION_HISTORY`` candidates by its float tower score. Such
    seen items can never reach the output while ``k + _CALIBRATION_HISTORY`` candidates
    exist (``top_unseen`` keeps ``k`` unseen), so no ``MASKED_SCORE`` stretches the
    output's range. With fewer candidates (``k`` = the catalogue, to score every item)
    the calibration has no history: masked scores would crush the real ones.
    """
    rows = len(representative["user_idx"])
    n = len(candidate_ids)
    if k + _CALIBRATION_HISTORY > n:
        return np.full((rows, 1), HISTORY_PAD, np.int64)
    features = {
        str(s.name): np.asarray(representative[str(s.name)]).astype(s.dtype.as_numpy_dtype)
        for s in signature
    }
    users = np.asarray(user_tower(features, training=False), np.float32)
    scores = users @ np.asarray(candidates, np.float32).T
    top = np.argsort(-scores, axis=1)[:, :_CALIBRATION_HISTORY]
    return np.asarray(candidate_ids, np.int64)[top]


def convert_retrieval_tflite(
    *,
    user_tower: keras.Model,
    candidate_ids: np.ndarray,
    candidates: np.ndarray,
    k: int,
    mode: str,
    representative: Mapping[str, np.ndarray] | None = None,
    calibration_batch: int = 32,
) -> bytes:
    """Convert the user tower plus brute-force top-K to a TFLite flatbuffer.

    Args:
        user_tower: Keras model taking indexed inputs (``edge_user_tower``, or the
            fake-quant tower of ``compressors.qat_user_tower``) and returning the user
            embedding.
        candidate_ids: Item id of each candidate row.
        candidates: Candidate embeddings ``[n, dim]``.
        k: Candidates returned (capped at ``n``).
        mode: One of ``TFLITE_MODES``.
        representative: Indexed user inputs (``edge_inputs``' output) to calibrate
            activations; required for ``int8``.
        calibration_batch: Rows per calibration call.

    Returns:
        The flatbuffer.

    Raises:
        ValueError: On an unknown mode or a missing representative dataset.
    """
    if mode not in TFLITE_MODES:
        raise ValueError(f"mode={mode!r}: expected one of {TFLITE_MODES}")
    module = _EdgeModule(user_tower, candidate_ids, candidates, min(k, len(candidate_ids)))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if representative is None:
            raise ValueError("mode='int8' needs a representative dataset")
        signature = _signature(user_tower)
        rows = len(representative["user_idx"])
        # Equal batches only: the calibrator keeps the shapes of its first batch, so a
        # shorter last batch fails to prepare (unless it is the only one).
        size = min(calibration_batch, rows)

        history = _calibration_history(
            user_tower, representative, signature, candidate_ids, candidates, k
        )

        def batches() -> Iterator[dict[str, np.ndarray]]:
            for start in range(0, rows - size + 1, size):
                yield {
                    **{
                        str(s.name): np.asarray(
                            representative[str(s.name)][start : start + size]
                        ).astype(s.dtype.as_numpy_dtype)
                        for s in signature
                    },
                    HISTORY_INPUT: np.asarray(history[start : start + size], np.int64),
                }

        converter.representative_dataset = batches
        # Int8 kernels wherever they exist; the int64 id inputs and the id gather stay as
        # they are (float/int builtins), so conversion does not fail on them.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    blob: bytes = converter.convert()
    return blob


class TFLiteScorer:
    """Run a converted retrieval flatbuffer with the TFLite interpreter."""

    def __init__(self, blob: bytes) -> None:
        """Load the flatbuffer ``blob`` into an interpreter."""
        self._interpreter = tf.lite.Interpreter(model_content=blob)
        self._runner: Callable[..., dict[str, np.ndarray]] = self._interpreter.get_signature_runner(
            "serving_default"
        )
        details = self._runner.get_input_details()  # type: ignore[attr-defined]
        self._dtypes: dict[str, Any] = {name: d["dtype"] for name, d in details.items()}

    @property
    def input_names(self) -> tuple[str, ...]:
        """The flatbuffer's input names (``edge_input_names`` of its spec)."""
        return tuple(self._dtypes)

    def __call__(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs ``item_ids, scores, embedding`` for indexed inputs (``edge_inputs``).

        ``HISTORY_INPUT`` (raw item ids ``[b, L]``, ``HISTORY_PAD``-padded) masks each
        row's seen items; without it no item is masked.
        """
        if HISTORY_INPUT not in features:
            rows = len(features[next(n for n in self._dtypes if n != HISTORY_INPUT)])
            features = {**features, HISTORY_INPUT: np.full((rows, 1), HISTORY_PAD, np.int64)}
        inputs: dict[str, Any] = {
            name: np.asarray(features[name], dtype=dtype) for name, dtype in self._dtypes.items()
        }
        out: dict[str, np.ndarray] = self._runner(**inputs)
        # Full int8 quantizes the output scores too: a seen item's score is clipped to
        # the calibrated range. The order is exact (integer mask); restore the score.
        history = inputs[HISTORY_INPUT]
        pairs = zip(out["item_ids"], history, strict=True)
        seen = np.array(
            [np.isin(ids, row[row != HISTORY_PAD]) for ids, row in pairs], dtype=bool
        ).reshape(out["item_ids"].shape)
        out["scores"] = np.where(seen, np.float32(MASKED_SCORE), out["scores"])
        return out
