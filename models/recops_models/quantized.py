"""Retrieval SavedModel with int8 (or fp16) embedding tables, de-quantized on lookup.

It has the same three signatures, input names and outputs as
``two_tower.export_retrieval_model``, and embeds a user unknown to the model from its
history the same way (``recops_models.retrieval_export``), from the de-quantized
candidate rows.

TF Serving runs SavedModels, not TFLite, so a size or memory cut for serving has to live in
the SavedModel itself. This export:

- **folds the user tower where that does not grow it.** The tower is
  ``l2norm(W·[e_user, enc_1, ..., enc_n] + b)`` where each feature's encoding ``enc_i`` is
  linear in its embedding rows (a row, or the mean of a few rows; a numeric's
  ``[value, missing]`` pair). A table ``[rows, width]`` can be pre-multiplied by its slice
  ``[width, dim]`` of ``W``, giving ``[rows, dim]`` rows that serving only gathers. That
  pays for the id table (``width >= dim``) and small categoricals, but a hashed text's
  thousands of 4-wide rows would grow 16-fold at ``dim = 64``, beyond the float model's
  size. So a table is folded only when the folded table takes no more bytes than the
  table plus its slice of ``W`` (``_fold_pays``); otherwise it is stored as trained and
  serving multiplies its looked-up (and pooled) rows by the slice. The bias goes into the
  id table, a numeric keeps its two rows of ``W``. Either way the result is the float
  model's up to float rounding.
- **quantizes every table.** The user id table, each feature's table (folded or not) and
  the candidate embedding matrix are stored as int8 or as float16; only the slices of
  ``W`` (at most ``width x dim`` each) stay float32, so the quantized tables make up
  nearly all the bytes. int8 is symmetric with one float32 scale per row
  (``max|row| / 127``), except in an unfolded table: there a scale per row would double
  a 4-wide table, so it gets one scale per column, multiplied into its slice of ``W``
  (free at serving). A lookup is ``tf.gather`` then ``tf.cast * scale``; scores are
  computed as ``(user @ cast(candidates).T) * scale`` so the candidate matrix is never
  de-quantized in full on the serving path.

Raw feature values reach the same weightless index layers as in the float model
(``recops_models.encoders``), so unknown values and missing numerics behave the same.

Importing this module imports TensorFlow (model code, used only inside pipeline tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recops_models.tf_env import use_legacy_keras

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.encoders import (  # noqa: E402
    embedding_layer_name,
    encoded_width,
    index_layer,
    is_pooled,
    recency_pool,
)
from recops_models.feature_defs import STRING_KINDS, EncodedFeature  # noqa: E402
from recops_models.two_tower import (  # noqa: E402
    RetrievalModule,
    TwoTowerSpec,
    candidate_embeddings,
    feature_prefix,
)

__all__ = [
    "TABLE_DTYPES",
    "FeatureTables",
    "FoldedTower",
    "dequantize_rows",
    "export_quantized_retrieval_model",
    "fold_user_tower",
    "quantize_rows",
]

#: Storage formats of the exported tables.
TABLE_DTYPES = ("int8", "float16", "float32")
#: Bytes per value of a table stored as each of ``TABLE_DTYPES`` (int8 scales aside: a
#: table has one per row whether folded or not, so they do not change the choice).
_VALUE_BYTES = {"int8": 1, "float16": 2, "float32": 4}
#: Bytes per value of a projection slice, which stays float32.
_SLICE_BYTES = 4


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


@dataclass(frozen=True)
class FeatureTables:
    """One user feature's share of the folded tower.

    Its contribution to the tower's pre-normalisation output is its encoding (the
    ``table`` row, the mean of its rows for a pooled feature, or a numeric's
    ``[value, missing]`` pair) times ``projection``, or the encoding alone when
    ``projection`` is None (the projection is folded into ``table``).

    Attributes:
        table: The feature's embedding rows, folded ``[rows, dim]`` or as trained
            ``[rows, width]``; None for a numeric.
        projection: The feature's ``[width, dim]`` rows of the projection kernel, applied
            after the lookup; None when folded into ``table``.
    """

    table: np.ndarray | None
    projection: np.ndarray | None

    @property
    def folded(self) -> bool:
        """Whether the projection is folded into the table (serving only gathers)."""
        return self.projection is None


@dataclass(frozen=True)
class FoldedTower:
    """The user tower as tables: ``l2norm(user[u] + sum of the features' contributions)``.

    Attributes:
        user: The folded id table ``[n_users + 1, dim]``, bias included.
        features: Each user feature's tables, keyed by feature name, in spec order.
        history: The history encoding's folded table (``[n_items + 1, dim]``, pooled
            by recency), None when the spec has no history.
    """

    user: np.ndarray
    features: dict[str, FeatureTables]
    history: FeatureTables | None = None


def _fold_pays(rows: int, width: int, dim: int, table_dtype: str) -> bool:
    """Whether a folded ``[rows, dim]`` table takes no more bytes than the table as
    trained (``[rows, width]``, same storage) plus its float32 ``[width, dim]`` slice."""
    value = _VALUE_BYTES[table_dtype]
    return rows * dim * value <= rows * width * value + width * dim * _SLICE_BYTES


def fold_user_tower(
    model: keras.Model, spec: TwoTowerSpec, table_dtype: str = "float32"
) -> FoldedTower:
    """Fold the user tower's projection into its embedding tables where that pays.

    The id table always takes the bias; a string feature's table is folded when that is
    no larger in ``table_dtype`` storage (``_fold_pays``: always when its width is at
    least the tower's, never for a big hashed text table of a few columns), otherwise it
    keeps its trained rows and its slice of the projection.

    Args:
        model: A training model from ``build_training_model(spec)`` (any
            ``embedding_dim``), plain or stripped of TF-MOT wrappers, with the original
            layer names.
        spec: Its spec (the user features, in concatenation order).
        table_dtype: How the tables will be stored (one of ``TABLE_DTYPES``); it sets
            which folds pay.

    Returns:
        The folded tower; its pre-normalisation output is the float tower's.

    Raises:
        ValueError: If the projection's kernel does not match the encodings' widths, or
            on an unknown ``table_dtype``.
    """
    if table_dtype not in TABLE_DTYPES:
        raise ValueError(f"table_dtype={table_dtype!r}: expected one of {TABLE_DTYPES}")
    prefix = feature_prefix("user")
    id_table = model.get_layer("user_id_embedding").get_weights()[0]
    kernel, bias = model.get_layer("user_projection").get_weights()
    dim = int(kernel.shape[1])
    widths = [id_table.shape[1], *(encoded_width(f) for f in spec.user_features)]
    history_table = (
        model.get_layer("item_id_embedding").get_weights()[0] if spec.history_length else None
    )
    expected = sum(widths) + (0 if history_table is None else history_table.shape[1])
    if kernel.shape[0] != expected:
        raise ValueError(
            f"user_projection kernel has {kernel.shape[0]} rows; expected {expected} "
            "(the user id embedding, each user feature's encoding and the history's)"
        )
    # Where each feature's rows start in the kernel: after the id rows and those before it.
    starts = np.cumsum(widths)[:-1]
    user = (id_table @ kernel[: widths[0]] + bias).astype(np.float32)
    features: dict[str, FeatureTables] = {}
    for f, start, width in zip(spec.user_features, starts, widths[1:], strict=True):
        rows = kernel[start : start + width].astype(np.float32)
        if f.kind not in STRING_KINDS:
            features[f.name] = FeatureTables(table=None, projection=rows)
            continue
        table = model.get_layer(embedding_layer_name(prefix, f)).get_weights()[0]
        if _fold_pays(len(table), width, dim, table_dtype):
            features[f.name] = FeatureTables(
                table=(table @ rows).astype(np.float32), projection=None
            )
        else:
            features[f.name] = FeatureTables(table=table.astype(np.float32), projection=rows)
    history = None
    if history_table is not None:
        # The history's rows come last in the concatenation. The table is as wide as
        # the tower (the item id embedding), so folding never grows it.
        folded = history_table @ kernel[sum(widths) :]
        history = FeatureTables(table=folded.astype(np.float32), projection=None)
    return FoldedTower(user=user, features=features, history=history)


class _StoredMatrix(tf.Module):  # type: ignore[misc]  # untyped base
    """A ``[rows, dim]`` matrix stored as int8 + per-row scale, float16, or float32."""

    def __init__(
        self, matrix: np.ndarray, dtype: str, name: str, *, row_scales: bool = True
    ) -> None:
        """Store ``matrix`` as ``dtype``.

        Args:
            matrix: The float matrix; with ``dtype="int8"`` and ``row_scales=False``, its
                int8 values, already quantized (their scales are kept by the caller).
            dtype: One of ``TABLE_DTYPES``.
            name: Module name.
            row_scales: Whether int8 values get one float32 scale per row.
        """
        super().__init__(name=name)
        self.scales: tf.Variable | None = None
        if dtype == "int8" and row_scales:
            values, scales = quantize_rows(matrix)
            self.values = tf.Variable(values, trainable=False, name="values")
            self.scales = tf.Variable(scales, trainable=False, name="scales")
        else:
            self.values = tf.Variable(
                np.ascontiguousarray(matrix, dtype=dtype), trainable=False, name="values"
            )

    def rows(self, index: tf.Tensor) -> tf.Tensor:
        """De-quantized rows ``index`` as float32."""
        rows = tf.cast(tf.gather(self.values, index), tf.float32)
        if self.scales is not None:
            rows *= tf.expand_dims(tf.gather(self.scales, index), -1)
        return rows

    def full(self) -> tf.Tensor:
        """The whole matrix as float32."""
        values = tf.cast(self.values, tf.float32)
        if self.scales is not None:
            values *= tf.expand_dims(self.scales, -1)
        return values

    def scores(self, queries: tf.Tensor) -> tf.Tensor:
        """``queries @ matrix.T`` without de-quantizing the matrix first."""
        scores = tf.matmul(queries, tf.cast(self.values, tf.float32), transpose_b=True)
        if self.scales is not None:
            scores *= tf.expand_dims(self.scales, 0)
        return scores


class _UserFeature(tf.Module):  # type: ignore[misc]  # untyped base
    """One user feature at serving: raw values to its share of the tower's output."""

    def __init__(
        self, feature: EncodedFeature, tables: FeatureTables, dtype: str, name: str
    ) -> None:
        super().__init__(name=name)
        self.pooled = is_pooled(feature)
        # Weightless lookup, as in the float model; an attribute, so its table is saved.
        self.index = index_layer(feature, f"{feature_prefix('user')}{feature.name}_index")
        projection = tables.projection
        self.table: _StoredMatrix | None = None
        if tables.table is not None and projection is not None and dtype == "int8":
            # Unfolded: one scale per column, folded into the projection slice. A scale
            # per row would double a 4-wide text table, and the slice applies a
            # per-column factor for free.
            values, scales = quantize_rows(tables.table.T)
            self.table = _StoredMatrix(values.T, dtype, "table", row_scales=False)
            projection = scales[:, None] * projection
        elif tables.table is not None:
            self.table = _StoredMatrix(tables.table, dtype, "table")
        self.projection = (
            None
            if projection is None
            else tf.Variable(projection.astype(np.float32), trainable=False, name="projection")
        )

    def __call__(self, raw: tf.Tensor) -> tf.Tensor:
        """The contribution ``[b, dim]`` of raw values ``[b]``."""
        index = self.index(raw)
        if self.table is None:  # a numeric: its [value, missing] pair
            encoded = index
        elif self.pooled:
            # Pool before projecting: the mean of projected rows is the projected mean,
            # and padding (0) is out either way.
            mask = tf.cast(tf.not_equal(index, 0), tf.float32)
            total = tf.reduce_sum(self.table.rows(index) * tf.expand_dims(mask, -1), axis=1)
            encoded = total / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        else:
            encoded = self.table.rows(index)
        if self.projection is not None:
            encoded = tf.matmul(encoded, self.projection)
        return encoded


class _HistoryEncoding(tf.Module):  # type: ignore[misc]  # untyped base
    """The history encoding at serving: dense item indices to its share of the output."""

    def __init__(self, tables: FeatureTables, dtype: str) -> None:
        super().__init__(name="user_history")
        assert tables.table is not None and tables.folded
        self.table = _StoredMatrix(tables.table, dtype, "table")

    def __call__(self, index: tf.Tensor) -> tf.Tensor:
        """The contribution ``[b, dim]`` of ``HISTORY_IDX`` indices ``[b, L]``: the
        folded rows, pooled (the pool is linear, so pooling folded rows is exact)."""
        return recency_pool(self.table.rows(index), index)


class _QuantizedRetrievalModule(RetrievalModule):
    """Raw-id lookups, the folded user tower and stored candidates, as one module."""

    def __init__(
        self,
        spec: TwoTowerSpec,
        tower: FoldedTower,
        candidate_ids: np.ndarray,
        candidate_embeddings: np.ndarray,
        k: int,
        dtype: str,
    ) -> None:
        super().__init__(spec, candidate_ids, k)
        self.feature_names = tuple(f.name for f in spec.user_features)
        self.user_rows = _StoredMatrix(tower.user, dtype, "user_rows")
        # Module names by position: feature names need not be identifiers.
        self.user_features = [
            _UserFeature(f, tower.features[f.name], dtype, f"user_feature_{i}")
            for i, f in enumerate(spec.user_features)
        ]
        self.candidates = _StoredMatrix(candidate_embeddings, dtype, "candidates")
        self.history = None if tower.history is None else _HistoryEncoding(tower.history, dtype)

    def embed(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        hidden = self.user_rows.rows(self.user_table.lookup(inputs["user_id"]))
        for name, feature in zip(self.feature_names, self.user_features, strict=True):
            hidden += feature(inputs[name])
        if self.history is not None:
            hidden += self.history(self.history_indices(inputs))
        return tf.math.l2_normalize(hidden, axis=-1)

    def scores(self, user: tf.Tensor) -> tf.Tensor:
        return self.candidates.scores(user)

    def candidate_matrix(self) -> tf.Tensor:
        return self.candidates.full()

    def candidate_rows(self, index: tf.Tensor) -> tf.Tensor:
        # An unknown user's history is pooled from the de-quantized rows it names only.
        return self.candidates.rows(index)


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
    ``serving_default(user_id, <user features>, history_item_ids) -> item_ids, scores``,
    ``user_embedding(...) -> embedding`` and ``item_embeddings() -> item_ids, embeddings``
    (the latter de-quantized to float32).

    Args:
        model: A trained training model (plain, not distributed, no TF-MOT wrappers), the
            teacher or a distilled student.
        spec: Its spec.
        items: Catalogue arrays ``item_id`` plus one per item feature (one row per item).
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
    tower = fold_user_tower(model, spec, table_dtype)
    _QuantizedRetrievalModule(spec, tower, item_ids, embeddings, k, table_dtype).save(export_dir)
    return k
