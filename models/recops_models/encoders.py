"""Attribute encoders in tf_keras: raw feature tensors to one dense vector per entity.

Importing this module imports TensorFlow (model code; only inside pipeline tasks).

Each feature goes through two steps, both top-level layers of the model that uses them:

1. an **index** layer, without weights (``index_layer``), from the raw input (what a
   serving signature takes: strings, or float32 with NaN for missing) to indices:

   - categorical: vocabulary position, ``int64 [b]`` (0 = out of vocabulary or missing);
   - multi_categorical: split on the separator, each value's vocabulary position,
     ``int64 [b, n]`` padded with 0 (unknown values are dropped as padding is);
   - text: lower-cased, split on non-alphanumerics, each word hashed into
     ``1..buckets``, ``int64 [b, n]`` padded with 0;
   - numeric / timestamp: ``[(x - mean) / std clipped to ±5 (0 when missing), missing]``,
     ``float32 [b, 2]``.

2. an **encoding** (``encode_indexed``): an ``Embedding`` per string feature (mean-pooled
   over the non-padding positions for multi-valued and text features; all zeros when
   empty), the numeric pair as it is.

Keeping the index step apart lets the TFLite export, which cannot run string lookups,
start from the indices (``index_features`` computes them eagerly in Python with these
same layers), and keeps every ``Embedding`` a top-level layer that pruning and clustering
can wrap. Every encoding is linear in its embedding rows (mean pooling is linear), which
is what lets ``recops_models.quantized`` fold a tower's projection into the tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recops_models.contract import HISTORY_DECAY
from recops_models.feature_defs import STRING_KINDS, EncodedFeature, FeatureDef
from recops_models.tf_env import use_legacy_keras

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = [
    "CUSTOM_LAYERS",
    "NUMERIC_CLIP",
    "TEXT_DIM",
    "CategoryIndex",
    "MeanPool",
    "NumericIndex",
    "RecencyPool",
    "TextIndex",
    "TokenIndex",
    "embedding_dim",
    "embedding_layer_name",
    "encode_indexed",
    "encoded_width",
    "feature_inputs",
    "index_features",
    "index_layer",
    "index_layer_name",
    "indexed_inputs",
    "indexed_signature",
    "input_signature",
    "is_pooled",
    "recency_pool",
    "recency_weights",
]

#: Output size of a text feature's embedding. Small on purpose: a hashed bag of words is
#: noisy (a zip code is nearly an id), so it gets little room next to the id embedding.
TEXT_DIM = 4
#: Largest embedding of a categorical or multi-valued categorical.
MAX_CATEGORY_DIM = 16
#: Standardised numerics are clipped to ±this, so an outlier (a 0 standing for "unknown",
#: a price typo) cannot dominate the projection.
NUMERIC_CLIP = 5.0
#: Characters that separate the words of a text feature (RE2 syntax).
_WORD_BREAK = r"[^\p{L}\p{N}]+"


def embedding_dim(feature: EncodedFeature) -> int:
    """Embedding size of a string feature, from its vocabulary size (0 for numerics).

    ``2 * ceil(sqrt(values + 1))`` capped at ``MAX_CATEGORY_DIM``: 4 for a two-valued
    categorical, 10 for twenty values, 16 from about fifty. Text gets ``TEXT_DIM``.
    """
    if feature.kind == "text":
        return TEXT_DIM
    if feature.kind in STRING_KINDS:
        return min(MAX_CATEGORY_DIM, 2 * math.ceil(math.sqrt(len(feature.vocab) + 1)))
    return 0


def is_pooled(feature: EncodedFeature | FeatureDef) -> bool:
    """Whether the feature has several values per row (multi-valued or text)."""
    return feature.kind in ("multi_categorical", "text")


def encoded_width(feature: EncodedFeature) -> int:
    """Width of the feature's encoding: its embedding size, or 2 for a numeric."""
    return embedding_dim(feature) if feature.kind in STRING_KINDS else 2


def index_layer_name(prefix: str, feature: EncodedFeature | FeatureDef) -> str:
    """Name of the feature's index layer in a model (``<prefix><name>_index``)."""
    return f"{prefix}{feature.name}_index"


def embedding_layer_name(prefix: str, feature: EncodedFeature | FeatureDef) -> str:
    """Name of the feature's ``Embedding`` layer in a model (``<prefix><name>_embedding``)."""
    return f"{prefix}{feature.name}_embedding"


def feature_inputs(features: Sequence[EncodedFeature | FeatureDef]) -> dict[str, Any]:
    """One scalar ``keras.Input`` per feature, named by it: tf.string or tf.float32.

    Args:
        features: The features, in model input order.

    Returns:
        Inputs keyed by feature name.
    """
    return {
        f.name: keras.Input(
            shape=(), dtype=tf.string if f.kind in STRING_KINDS else tf.float32, name=f.name
        )
        for f in features
    }


def input_signature(features: Sequence[EncodedFeature | FeatureDef]) -> list[tf.TensorSpec]:
    """Named ``[None]`` tensor specs of the raw features (serving signature inputs)."""
    return [
        tf.TensorSpec([None], tf.string if f.kind in STRING_KINDS else tf.float32, name=f.name)
        for f in features
    ]


def _indexed_spec(feature: EncodedFeature) -> tuple[list[int | None], tf.DType]:
    if feature.kind == "categorical":
        return [None], tf.int64
    if is_pooled(feature):
        return [None, None], tf.int64
    return [None, 2], tf.float32


def indexed_inputs(features: Sequence[EncodedFeature]) -> dict[str, Any]:
    """``keras.Input`` s of the index layers' outputs, named by feature (edge models)."""
    out = {}
    for f in features:
        shape, dtype = _indexed_spec(f)
        out[f.name] = keras.Input(shape=tuple(shape[1:]), dtype=dtype, name=f.name)
    return out


def indexed_signature(features: Sequence[EncodedFeature]) -> list[tf.TensorSpec]:
    """Named tensor specs of the index layers' outputs (the TFLite function's inputs)."""
    return [tf.TensorSpec(*_indexed_spec(f), name=f.name) for f in features]


def _string_table(vocab: Sequence[str]) -> tf.lookup.StaticHashTable:
    """Value -> 1-based vocabulary position; 0 for anything else (an empty vocab too)."""
    keys = list(vocab) or [""]
    values = np.arange(1, len(vocab) + 1, dtype=np.int64) if vocab else np.zeros(1, np.int64)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(values, tf.int64)
        ),
        default_value=0,
    )


class CategoryIndex(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """A categorical's strings to vocabulary positions ``int64 [b]`` (0 = unknown)."""

    def __init__(self, vocab: Sequence[str], **kwargs: Any) -> None:
        # Index layers: no weights, float32 whatever the global (mixed) policy.
        kwargs.pop("dtype", None)
        kwargs.pop("trainable", None)
        super().__init__(dtype="float32", trainable=False, **kwargs)
        self.vocab = [str(v) for v in vocab]
        self.table = _string_table(self.vocab)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return self.table.lookup(inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab": list(self.vocab)}


class TokenIndex(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """A multi-valued categorical's strings to positions ``int64 [b, n]``, 0-padded.

    Values missing from the vocabulary map to 0, like padding: the pool ignores them.
    """

    def __init__(self, vocab: Sequence[str], separator: str, **kwargs: Any) -> None:
        # Index layers: no weights, float32 whatever the global (mixed) policy.
        kwargs.pop("dtype", None)
        kwargs.pop("trainable", None)
        super().__init__(dtype="float32", trainable=False, **kwargs)
        self.vocab = [str(v) for v in vocab]
        self.separator = str(separator)
        self.table = _string_table(self.vocab)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        parts = tf.strings.split(inputs, sep=self.separator)
        index = tf.ragged.map_flat_values(lambda v: self.table.lookup(tf.strings.strip(v)), parts)
        return tf.cast(index.to_tensor(default_value=0), tf.int64)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab": list(self.vocab), "separator": self.separator}


class TextIndex(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """A text's words hashed into ``1..buckets``, ``int64 [b, n]``, 0-padded."""

    def __init__(self, buckets: int, **kwargs: Any) -> None:
        # Index layers: no weights, float32 whatever the global (mixed) policy.
        kwargs.pop("dtype", None)
        kwargs.pop("trainable", None)
        super().__init__(dtype="float32", trainable=False, **kwargs)
        self.buckets = int(buckets)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        text = tf.strings.regex_replace(
            tf.strings.lower(inputs, encoding="utf-8"), _WORD_BREAK, " "
        )
        words = tf.strings.split(text)
        hashed = tf.ragged.map_flat_values(
            lambda w: tf.strings.to_hash_bucket_fast(w, self.buckets) + 1, words
        )
        return tf.cast(hashed.to_tensor(default_value=0), tf.int64)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "buckets": self.buckets}


class NumericIndex(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """``[clip((x - mean) / std), missing]`` as float32 ``[b, 2]``; NaN -> ``[0, 1]``.

    Float32 whatever the global policy: it is an input, cast by the layers that use it.
    """

    def __init__(self, mean: float, std: float, **kwargs: Any) -> None:
        # Index layers: no weights, float32 whatever the global (mixed) policy.
        kwargs.pop("dtype", None)
        kwargs.pop("trainable", None)
        super().__init__(dtype="float32", trainable=False, **kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)
        missing = tf.math.is_nan(x)
        scaled = tf.clip_by_value((x - self.mean) / self.std, -NUMERIC_CLIP, NUMERIC_CLIP)
        # Missing values sit at the mean, so they do not pull the projection; the flag
        # lets the model learn what "missing" means.
        scaled = tf.where(missing, tf.zeros_like(x), scaled)
        return tf.stack([scaled, tf.cast(missing, tf.float32)], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


class MeanPool(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """Mean of ``embeddings [b, n, d]`` over positions whose index is not 0; zeros if none."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        embeddings, index = inputs
        mask = tf.cast(tf.not_equal(index, 0), embeddings.dtype)
        total = tf.reduce_sum(embeddings * tf.expand_dims(mask, -1), axis=1)
        count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        return total / count


def recency_weights(valid: tf.Tensor) -> tf.Tensor:
    """``HISTORY_DECAY ** slot`` where ``valid [b, L]`` holds (slot 0 the newest), else 0."""
    slots = tf.cast(tf.range(tf.shape(valid)[1]), tf.float32)
    decay = tf.pow(tf.constant(HISTORY_DECAY, tf.float32), slots)
    return tf.where(valid, tf.expand_dims(decay, 0), 0.0)


def recency_pool(embeddings: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """Recency-weighted mean of ``embeddings [b, L, d]`` over the slots whose index is
    not 0: slot ``i`` (0 = newest) weighs ``HISTORY_DECAY ** i``; zeros when none.

    Linear in the embedding rows, like ``MeanPool``, so a projection can be folded into
    the table (``recops_models.quantized``).
    """
    weights = recency_weights(tf.not_equal(index, 0))
    weights /= tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-6)
    weights = tf.cast(weights, embeddings.dtype)
    return tf.reduce_sum(embeddings * tf.expand_dims(weights, -1), axis=1)


class RecencyPool(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """``recency_pool`` as a layer: the user tower's history encoding."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        embeddings, index = inputs
        return recency_pool(embeddings, index)


#: Custom layers of the encoders, by class name (``quantize_scope``, ``clone_model``).
CUSTOM_LAYERS: dict[str, type] = {
    "CategoryIndex": CategoryIndex,
    "TokenIndex": TokenIndex,
    "TextIndex": TextIndex,
    "NumericIndex": NumericIndex,
    "MeanPool": MeanPool,
    "RecencyPool": RecencyPool,
}


def index_layer(feature: EncodedFeature, name: str) -> keras.layers.Layer:
    """The weightless layer from the feature's raw input to its indices (module docstring)."""
    if feature.kind == "categorical":
        return CategoryIndex(feature.vocab, name=name)
    if feature.kind == "multi_categorical":
        return TokenIndex(feature.vocab, feature.separator or "|", name=name)
    if feature.kind == "text":
        return TextIndex(feature.buckets, name=name)
    return NumericIndex(feature.mean, feature.std, name=name)


def encode_indexed(
    features: Sequence[EncodedFeature], indexed: Mapping[str, Any], prefix: str
) -> list[Any]:
    """Encode each feature's indices: embeddings (pooled where multi-valued), numerics.

    Args:
        features: The features.
        indexed: Index tensors keyed by feature name (index layer outputs or
            ``indexed_inputs``).
        prefix: Layer-name prefix (``user_`` / ``item_``), so towers do not collide.

    Returns:
        One float tensor ``[b, encoded_width(f)]`` per feature, in order.
    """
    out = []
    for f in features:
        index = indexed[f.name]
        if f.kind not in STRING_KINDS:
            out.append(index)
            continue
        rows = len(f.vocab) + 1 if f.kind != "text" else f.buckets + 1
        embedded = keras.layers.Embedding(
            rows, embedding_dim(f), name=embedding_layer_name(prefix, f)
        )(index)
        if is_pooled(f):
            embedded = MeanPool(name=f"{prefix}{f.name}_pool")([embedded, index])
        out.append(embedded)
    return out


def index_features(
    features: Sequence[EncodedFeature], raw: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run the index layers eagerly on raw arrays (``feature_defs.raw_inputs``' output).

    Pooled features come back padded to at least one column, so every batch has a shape
    a fixed-rank runtime (TFLite) accepts.

    Args:
        features: The features.
        raw: Raw arrays keyed by feature name (strings; float32 with NaN for missing).

    Returns:
        Index arrays keyed by feature name, as the index layers output them.
    """
    out: dict[str, np.ndarray] = {}
    for f in features:
        layer = index_layer(f, name=f"{f.name}_index")
        dtype = tf.string if f.kind in STRING_KINDS else tf.float32
        values = np.asarray(layer(tf.constant(np.asarray(raw[f.name]), dtype)).numpy())
        if is_pooled(f) and values.shape[1] == 0:
            values = np.zeros((values.shape[0], 1), np.int64)
        out[f.name] = values
    return out
