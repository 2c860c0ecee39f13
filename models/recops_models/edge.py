"""TFLite edge artifacts of the retrieval model: conversion and interpreter scoring.

TFLite has no use for the raw-id hash tables of the SavedModel, so the converted function
takes **already-indexed** features, i.e. the vocabulary positions written in the model's
``spec.json`` (``TwoTowerSpec.user_index`` etc., 0 = unknown):

    serving_default(user_idx, gender_idx, occupation_idx, age: int64[b])
        -> item_ids int64[b, k], scores float32[b, k], embedding float32[b, dim]

The candidate embeddings are baked in as a constant, so the converter quantizes them with
the rest of the weights.

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

from recops_models.two_tower import USER_INPUTS  # noqa: E402

__all__ = ["TFLITE_MODES", "TFLiteScorer", "convert_retrieval_tflite"]

#: ``dynamic``: int8 weights, float activations; ``float16``: fp16 weights; ``int8``: int8
#: weights and activations calibrated on a representative dataset; ``qat``: a model
#: trained with fake-quant nodes, converted with its learnt ranges.
TFLITE_MODES = ("dynamic", "float16", "int8", "qat")


#: The converted function's inputs: already-indexed user features, one int64 per user.
_INDEXED_USER_SIGNATURE = [tf.TensorSpec([None], tf.int64, name=n) for n in USER_INPUTS]


class _EdgeModule(tf.Module):  # type: ignore[misc]  # untyped base
    def __init__(
        self, user_tower: keras.Model, candidate_ids: np.ndarray, candidates: np.ndarray, k: int
    ) -> None:
        super().__init__(name="recops_edge")
        self.user_tower = user_tower
        self.candidate_ids = tf.constant(np.asarray(candidate_ids, np.int64))
        self.candidates = tf.constant(np.asarray(candidates, np.float32))
        self.k = k

    @tf.function(input_signature=_INDEXED_USER_SIGNATURE)  # type: ignore[untyped-decorator]
    def serve(
        self,
        user_idx: tf.Tensor,
        gender_idx: tf.Tensor,
        occupation_idx: tf.Tensor,
        age: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        user = self.user_tower(
            {
                "user_idx": user_idx,
                "gender_idx": gender_idx,
                "occupation_idx": occupation_idx,
                "age": age,
            },
            training=False,
        )
        top = tf.math.top_k(tf.matmul(user, self.candidates, transpose_b=True), k=self.k)
        return {
            "item_ids": tf.gather(self.candidate_ids, top.indices),
            "scores": top.values,
            "embedding": user,
        }


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
        user_tower: Keras model taking ``USER_INPUTS`` (dense indices) and returning the
            user embedding (float or QAT-wrapped).
        candidate_ids: Item id of each candidate row.
        candidates: Candidate embeddings ``[n, dim]``.
        k: Candidates returned (capped at ``n``).
        mode: One of ``TFLITE_MODES``.
        representative: Indexed user features (arrays keyed by ``USER_INPUTS``) to
            calibrate activations; required for ``int8``.
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
        rows = len(representative[USER_INPUTS[0]])

        def batches() -> Iterator[dict[str, np.ndarray]]:
            for start in range(0, rows, calibration_batch):
                yield {
                    name: np.asarray(
                        representative[name][start : start + calibration_batch]
                    ).astype(np.int64)
                    for name in USER_INPUTS
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

    def __call__(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs ``item_ids, scores, embedding`` for indexed ``USER_INPUTS`` arrays."""
        inputs: dict[str, Any] = {
            name: np.asarray(features[name], dtype=np.int64) for name in USER_INPUTS
        }
        return self._runner(**inputs)
