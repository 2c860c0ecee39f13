"""A tiny but real SavedModel that follows the retrieval contract (see recops.config)."""

from __future__ import annotations

import os
from pathlib import Path


def export_contract_model(
    path: Path, *, n_items: int = 20, dim: int = 4, k: int = 100, seed: int = 0
) -> Path:
    """Export a random two-tower-shaped tf.Module with the three contract signatures."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    gen = tf.random.Generator.from_seed(seed)

    class Contract(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_table = tf.Variable(gen.normal([50, dim]))
            self.items = tf.Variable(gen.normal([n_items, dim]))
            self.item_ids = tf.constant(list(range(1, n_items + 1)), dtype=tf.int64)

        def _user(self, user_id, age, gender, occupation):  # noqa: ANN001, ANN202
            base = tf.gather(self.user_table, user_id % 50)
            bias = tf.cast(age, tf.float32)[:, None] * 0.01
            bias += (
                tf.cast(tf.strings.length(gender) + tf.strings.length(occupation), tf.float32)[
                    :, None
                ]
                * 0.001
            )
            return base + bias

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.int64, name="user_id"), tf.TensorSpec([None], tf.int64, name="age"),
            tf.TensorSpec([None], tf.string, name="gender"), tf.TensorSpec([None], tf.string, name="occupation"),
        ])  # fmt: skip
        def serve(self, user_id, age, gender, occupation):  # noqa: ANN001, ANN201
            scores = tf.matmul(
                self._user(user_id, age, gender, occupation), self.items, transpose_b=True
            )
            kk = min(k, n_items)
            values, idx = tf.math.top_k(scores, kk)
            pad = k - kk
            values = tf.pad(values, [[0, 0], [0, pad]], constant_values=-1e9)
            ids = tf.pad(tf.gather(self.item_ids, idx), [[0, 0], [0, pad]], constant_values=0)
            return {"item_ids": ids, "scores": values}

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.int64, name="user_id"), tf.TensorSpec([None], tf.int64, name="age"),
            tf.TensorSpec([None], tf.string, name="gender"), tf.TensorSpec([None], tf.string, name="occupation"),
        ])  # fmt: skip
        def user_embedding(self, user_id, age, gender, occupation):  # noqa: ANN001, ANN201
            return {"embedding": self._user(user_id, age, gender, occupation)}

        @tf.function(input_signature=[])
        def item_embeddings(self):  # noqa: ANN201
            return {"item_ids": self.item_ids, "embeddings": tf.identity(self.items)}

    module = Contract()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.serve,
            "user_embedding": module.user_embedding,
            "item_embeddings": module.item_embeddings,
        },
    )
    return path
