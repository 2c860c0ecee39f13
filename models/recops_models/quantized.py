"""Retrieval SavedModel with int8 (or fp16) embedding tables, de-quantized on lookup.

It has the same three signatures as ``two_tower.export_retrieval_model``.

TF Serving runs SavedModels, not TFLite, so a size or memory cut for serving has to live in
the SavedModel itself. This export:

- **folds the user tower.** The tower is ``l2norm(W·[e_user, e_gender, e_occupation,
  age_std] + b)``; everything before the normalisation is linear, so each table is
  pre-multiplied by its slice of ``W`` (the bias goes into the user table). Serving then
  needs three gathers, an add and a normalisation instead of a concat and a dense layer.
  The fold is exact up to float rounding.
- **quantizes the big tables.** The folded user table and the candidate embedding matrix
  are stored as int8 with one float32 scale per row (symmetric, ``max|row| / 127``), or as
  float16. A lookup is ``tf.gather`` then ``tf.cast * scale``; scores are computed as
  ``(user @ cast(candidates).T) * scale`` so the candidate matrix is never de-quantized in
  full on the serving path. The small gender/occupation tables stay float32.

Importing this module imports TensorFlow (model code, used only inside pipeline tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recops_models.tf_env import use_legacy_keras

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.two_tower import (  # noqa: E402
    USER_SIGNATURE,
    TwoTowerSpec,
    candidate_embeddings,
    int_table,
    string_table,
)

__all__ = [
    "TABLE_DTYPES",
    "dequantize_rows",
    "export_quantized_retrieval_model",
    "fold_user_tower",
    "quantize_rows",
]

#: Storage formats of the exported tables.
TABLE_DTYPES = ("int8", "float16", "float32")


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantization.

    Args:
        matrix: Float array ``[rows, dim]``.

    Returns:
        ``(values int8 [rows, dim], scales float32 [rows])`` with
        ``values * scales[:, None] ≈ matrix``. All-zero rows get scale 1.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    peak = np.abs(matrix).max(axis=1) if matrix.size else np.zeros(matrix.shape[0], np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    values = np.clip(np.rint(matrix / scales[:, None]), -127, 127).astype(np.int8)
    return values, scales


def dequantize_rows(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of ``quantize_rows``.

    Args:
        values: Int8 values ``[rows, dim]``.
        scales: One float scale per row.

    Returns:
        Float32 ``[rows, dim]``.
    """
    return values.astype(np.float32) * np.asarray(scales, np.float32)[:, None]


def fold_user_tower(model: keras.Model) -> dict[str, np.ndarray]:
    """Fold the user tower's projection into its embedding tables.

    Args:
        model: A training model from ``build_training_model`` (any ``embedding_dim``),
            plain or stripped of TF-MOT wrappers, with the original layer names.

    Returns:
        ``user`` ``[n_users+1, dim]`` (bias included), ``gender`` ``[n_genders+1, dim]``,
        ``occupation`` ``[n_occupations+1, dim]`` and ``age`` ``[dim]`` such that the
        tower's pre-normalisation output is ``user[u] + gender[g] + occupation[o] +
        age_std * age``.

    Raises:
        ValueError: If the projection's kernel does not match the tables' widths.
    """
    tables = [
        model.get_layer(name).get_weights()[0]
        for name in ("user_id_embedding", "gender_embedding", "occupation_embedding")
    ]
    kernel, bias = model.get_layer("user_projection").get_weights()
    widths = [t.shape[1] for t in tables]
    if kernel.shape[0] != sum(widths) + 1:
        raise ValueError(
            f"user_projection kernel has {kernel.shape[0]} rows; expected {sum(widths) + 1} "
            "(user, gender, occupation embeddings and age)"
        )
    starts = np.cumsum([0, *widths])[:-1]
    folded = [t @ kernel[s : s + w] for t, s, w in zip(tables, starts, widths, strict=True)]
    return {
        "user": (folded[0] + bias).astype(np.float32),
        "gender": folded[1].astype(np.float32),
        "occupation": folded[2].astype(np.float32),
        "age": kernel[-1].astype(np.float32),
    }


class _StoredMatrix(tf.Module):  # type: ignore[misc]  # untyped base
    """A ``[rows, dim]`` matrix stored as int8 + per-row scale, float16, or float32."""

    def __init__(self, matrix: np.ndarray, dtype: str, name: str) -> None:
        super().__init__(name=name)
        self.dtype = dtype
        if dtype == "int8":
            values, scales = quantize_rows(matrix)
            self.values = tf.Variable(values, trainable=False, name="values")
            self.scales = tf.Variable(scales, trainable=False, name="scales")
        else:
            self.values = tf.Variable(
                np.asarray(matrix, dtype=dtype), trainable=False, name="values"
            )

    def rows(self, index: tf.Tensor) -> tf.Tensor:
        """De-quantized rows ``index`` as float32."""
        rows = tf.cast(tf.gather(self.values, index), tf.float32)
        if self.dtype == "int8":
            rows *= tf.expand_dims(tf.gather(self.scales, index), -1)
        return rows

    def full(self) -> tf.Tensor:
        """The whole matrix as float32."""
        values = tf.cast(self.values, tf.float32)
        if self.dtype == "int8":
            values *= tf.expand_dims(self.scales, -1)
        return values

    def scores(self, queries: tf.Tensor) -> tf.Tensor:
        """``queries @ matrix.T`` without de-quantizing the matrix first."""
        scores = tf.matmul(queries, tf.cast(self.values, tf.float32), transpose_b=True)
        if self.dtype == "int8":
            scores *= tf.expand_dims(self.scales, 0)
        return scores


class _QuantizedRetrievalModule(tf.Module):  # type: ignore[misc]  # untyped base
    """Raw-id lookups, the folded user tower and stored candidates, as one module."""

    def __init__(
        self,
        spec: TwoTowerSpec,
        folded: Mapping[str, np.ndarray],
        candidate_ids: np.ndarray,
        candidate_embeddings: np.ndarray,
        k: int,
        dtype: str,
    ) -> None:
        super().__init__(name="recops_retrieval")
        self.user_table = int_table(spec.user_ids)
        self.gender_table = string_table(spec.genders)
        self.occupation_table = string_table(spec.occupations)
        self.user_rows = _StoredMatrix(folded["user"], dtype, "user_rows")
        # Tiny tables: quantizing them saves bytes nobody would notice.
        self.gender_rows = tf.Variable(folded["gender"], trainable=False, name="gender_rows")
        self.occupation_rows = tf.Variable(
            folded["occupation"], trainable=False, name="occupation_rows"
        )
        self.age_weight = tf.Variable(folded["age"], trainable=False, name="age_weight")
        self.age_mean = float(spec.age_mean)
        self.age_std = float(spec.age_std)
        self.candidate_ids = tf.Variable(candidate_ids, trainable=False, name="candidate_ids")
        self.candidates = _StoredMatrix(candidate_embeddings, dtype, "candidates")
        self.k = k

    def _embed(
        self, user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor, occupation: tf.Tensor
    ) -> tf.Tensor:
        age_std = (tf.cast(age, tf.float32) - self.age_mean) / self.age_std
        hidden = (
            self.user_rows.rows(self.user_table.lookup(user_id))
            + tf.gather(self.gender_rows, self.gender_table.lookup(gender))
            + tf.gather(self.occupation_rows, self.occupation_table.lookup(occupation))
            + tf.expand_dims(age_std, -1) * self.age_weight
        )
        return tf.math.l2_normalize(hidden, axis=-1)

    @tf.function(input_signature=USER_SIGNATURE)  # type: ignore[untyped-decorator]
    def serve(
        self, user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor, occupation: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        user = self._embed(user_id, age, gender, occupation)
        top = tf.math.top_k(self.candidates.scores(user), k=self.k)
        return {"item_ids": tf.gather(self.candidate_ids, top.indices), "scores": top.values}

    @tf.function(input_signature=USER_SIGNATURE)  # type: ignore[untyped-decorator]
    def user_embedding(
        self, user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor, occupation: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return {"embedding": self._embed(user_id, age, gender, occupation)}

    @tf.function(input_signature=[])  # type: ignore[untyped-decorator]
    def item_embeddings(self) -> dict[str, tf.Tensor]:
        return {"item_ids": tf.identity(self.candidate_ids), "embeddings": self.candidates.full()}


def export_quantized_retrieval_model(
    *,
    model: keras.Model,
    spec: TwoTowerSpec,
    items: Mapping[str, np.ndarray],
    export_dir: Path,
    k: int,
    table_dtype: str = "int8",
) -> int:
    """Export the retrieval SavedModel with folded, quantized tables.

    Same signatures, input names and output names as ``export_retrieval_model``:
    ``serving_default(user_id, age, gender, occupation) -> item_ids, scores``,
    ``user_embedding(...) -> embedding`` and ``item_embeddings() -> item_ids, embeddings``
    (the latter de-quantized to float32).

    Args:
        model: A trained training model (plain, not distributed, no TF-MOT wrappers), the
            teacher or a distilled student.
        spec: Its spec.
        items: Catalogue arrays ``item_id, genre_mask, release_year`` (one row per item).
        export_dir: Folder to write; must not exist yet.
        k: Candidates returned by ``serving_default``; capped at the catalogue size.
        table_dtype: ``int8`` (per-row scales), ``float16`` or ``float32`` (fold only).

    Returns:
        The ``k`` actually used.

    Raises:
        ValueError: On an unknown ``table_dtype`` or a bad catalogue.
    """
    if table_dtype not in TABLE_DTYPES:
        raise ValueError(f"table_dtype={table_dtype!r}: expected one of {TABLE_DTYPES}")
    item_ids, embeddings = candidate_embeddings(model, spec, items)
    k = min(k, int(item_ids.size))
    module = _QuantizedRetrievalModule(
        spec, fold_user_tower(model), item_ids, embeddings, k, table_dtype
    )
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={
            "serving_default": module.serve,
            "user_embedding": module.user_embedding,
            "item_embeddings": module.item_embeddings,
        },
    )
    return k
