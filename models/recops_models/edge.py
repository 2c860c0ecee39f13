"""TFLite edge artifacts of the retrieval model: conversion and interpreter scoring.

TFLite cannot run the string lookups, splits and hashing of the SavedModel, so the
converted function takes **already-indexed** inputs, the outputs of the model's index
layers (``recops_models.encoders``), named like the SavedModel's inputs:

    serving_default(user_idx: int64[b],
                    <categorical>: int64[b] (vocabulary position, 0 = unknown),
                    <multi-valued or text>: int64[b, n] (positions / word hashes, 0-padded),
                    <numeric>: float32[b, 2] ([standardised value, missing flag]))
        -> item_ids int64[b, k], scores float32[b, k], embedding float32[b, dim]

``edge_inputs(spec, frame)`` computes those inputs from a frame of raw users (``user_id``
plus the user feature columns) with the model's own index layers, so callers need not
know the features. The candidate embeddings are baked in as a constant, so the converter
quantizes them with the rest of the weights.

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
from recops_models.two_tower import TwoTowerSpec, build_tower, user_inputs  # noqa: E402

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


def edge_inputs(spec: TwoTowerSpec, frame: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The indexed inputs of the edge model for raw users.

    Args:
        spec: The model's spec (``spec.json`` beside the artifact).
        frame: ``user_id`` plus one column per user feature (a DataFrame or a mapping
            of arrays); unknown ids and values and missing numerics are fine.

    Returns:
        Arrays keyed by ``edge_input_names(spec)``.

    Raises:
        ValueError: If a user feature column is missing.
    """
    missing = [f.name for f in spec.user_features if f.name not in frame]
    if missing:
        raise ValueError(f"the users frame lacks the user feature column(s) {missing}")
    raw = raw_inputs(spec.user_features, frame)
    return {
        "user_idx": spec.user_index(np.asarray(frame["user_id"], np.int64)),
        **index_features(spec.user_features, raw),
    }


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
        self.k = k
        signature = _signature(user_tower)
        names = tuple(str(s.name) for s in signature)

        # Inputs differ per dataset: positional tensors, named from the signature.
        def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            user = self.user_tower(dict(zip(names, args, strict=True)), training=False)
            top = tf.math.top_k(tf.matmul(user, self.candidates, transpose_b=True), k=self.k)
            return {
                "item_ids": tf.gather(self.candidate_ids, top.indices),
                "scores": top.values,
                "embedding": user,
            }

        self.serve = tf.function(serve, input_signature=signature)


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

        def batches() -> Iterator[dict[str, np.ndarray]]:
            for start in range(0, rows - size + 1, size):
                yield {
                    str(s.name): np.asarray(
                        representative[str(s.name)][start : start + size]
                    ).astype(s.dtype.as_numpy_dtype)
                    for s in signature
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
        """Outputs ``item_ids, scores, embedding`` for indexed inputs (``edge_inputs``)."""
        inputs: dict[str, Any] = {
            name: np.asarray(features[name], dtype=dtype) for name, dtype in self._dtypes.items()
        }
        return self._runner(**inputs)
