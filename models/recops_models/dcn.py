"""DCN-v2 ranker in tf_keras (Functional), with its SavedModel export.

Importing this module imports TensorFlow. It is model code, referenced only from inside
pipeline tasks (``recops.ranking``), never at DAG parse time.

- Inputs: user-id and item-id embeddings, gender and occupation embeddings, standardised
  age, release year (standardised, plus an "unknown" flag), the genre multi-hot and any
  extra numeric features (standardised with fixed train statistics).
- Body: ``cross_layers`` DCN-v2 cross layers (``x_{l+1} = x_0 * (W x_l + b) + x_l``,
  full-rank ``W``) stacked under a ReLU MLP.
- Heads: ``rating`` (regression; global mean plus user and item biases plus the MLP's
  output) and ``click`` (a logit: observed interaction vs sampled negative).
- Export: a ``rank`` signature scoring each user against a list of candidate item ids.
  Item-side features (genres, year, numeric item features) live in a catalogue table
  inside the SavedModel, so callers send only ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recops_models.tf_env import use_legacy_keras
from recops_models.vocab import OOV_INDEX, lookup_index, sorted_vocab

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.two_tower import (  # noqa: E402
    N_GENRES,
    GenreMultiHot,
    ReleaseYear,
    Standardize,
    int_table,
    string_table,
)

__all__ = [
    "INT_INPUTS",
    "NUMERIC_INPUT",
    "RANK_BASE_INPUTS",
    "Cross",
    "NumericStandardize",
    "RankerSpec",
    "build_ranking_model",
    "export_ranking_model",
    "ranking_inputs",
    "save_spec",
]

#: Integer inputs of the Keras model, one scalar per example.
INT_INPUTS = (
    "user_idx",
    "item_idx",
    "gender_idx",
    "occupation_idx",
    "age",
    "release_year",
    "genre_mask",
)
#: Float input ``[batch, n_numeric]`` holding user then item numeric features.
NUMERIC_INPUT = "numeric"
#: Inputs of the ``rank`` signature besides the numeric user features.
RANK_BASE_INPUTS = ("user_id", "age", "gender", "occupation", "item_ids")
_GENDER_DIM = 4
_OCCUPATION_DIM = 8
_SPEC_FILE = "spec.json"


@dataclass(frozen=True, kw_only=True)
class RankerSpec:
    """Everything needed to rebuild the ranker graph: vocabularies, stats, sizes."""

    user_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    genders: tuple[str, ...]
    occupations: tuple[str, ...]
    age_mean: float
    age_std: float
    year_mean: float
    year_std: float
    rating_mean: float
    rating_min: float
    rating_max: float
    user_numeric: tuple[str, ...] = ()
    item_numeric: tuple[str, ...] = ()
    numeric_means: tuple[float, ...] = ()
    numeric_stds: tuple[float, ...] = ()
    embedding_dim: int = 32
    cross_layers: int = 2
    deep_units: tuple[int, ...] = (128, 64)
    l2: float = 0.0
    dropout: float = 0.0

    @property
    def numeric(self) -> tuple[str, ...]:
        """All numeric features in model order: user side, then item side."""
        return (*self.user_numeric, *self.item_numeric)

    @classmethod
    def from_columns(
        cls,
        *,
        columns: Mapping[str, np.ndarray],
        user_numeric: Sequence[str] = (),
        item_numeric: Sequence[str] = (),
        **sizes: Any,
    ) -> RankerSpec:
        """Fit vocabularies and standardisation stats on training columns.

        Args:
            columns: Train rows: ``user_id, item_id, gender, occupation, age,
                release_year, rating`` and the numeric features.
            user_numeric: Numeric features sent by the caller with each user.
            item_numeric: Numeric features looked up per item inside the model.
            **sizes: ``embedding_dim``, ``cross_layers``, ``deep_units``, ``l2``,
                ``dropout``.

        Returns:
            The spec.
        """
        years = np.asarray(columns["release_year"], dtype=np.float64)
        known = years[years > 0]
        ages = np.asarray(columns["age"], dtype=np.float64)
        ratings = np.asarray(columns["rating"], dtype=np.float64)
        means, stds = [], []
        for name in (*user_numeric, *item_numeric):
            values = np.asarray(columns[name], dtype=np.float64)
            values = values[np.isfinite(values)]
            means.append(float(values.mean()) if values.size else 0.0)
            std = float(values.std()) if values.size else 0.0
            stds.append(std if std > 0 else 1.0)
        return cls(
            user_ids=tuple(int(v) for v in sorted_vocab(columns["user_id"])),
            item_ids=tuple(int(v) for v in sorted_vocab(columns["item_id"])),
            genders=tuple(str(v) for v in sorted_vocab(np.asarray(columns["gender"], str))),
            occupations=tuple(str(v) for v in sorted_vocab(np.asarray(columns["occupation"], str))),
            age_mean=float(ages.mean()),
            age_std=float(ages.std()) if ages.std() > 0 else 1.0,
            year_mean=float(known.mean()) if known.size else 0.0,
            year_std=float(known.std()) if known.size and known.std() > 0 else 1.0,
            rating_mean=float(ratings.mean()),
            rating_min=float(ratings.min()),
            rating_max=float(ratings.max()),
            user_numeric=tuple(user_numeric),
            item_numeric=tuple(item_numeric),
            numeric_means=tuple(means),
            numeric_stds=tuple(stds),
            **sizes,
        )

    def to_json(self) -> str:
        """Serialise the spec."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RankerSpec:
        """Rebuild a spec written by ``to_json``."""
        raw: dict[str, Any] = json.loads(text)
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**fields)

    def index(self, name: str, values: np.ndarray) -> np.ndarray:
        """Dense 1-based indices of raw values of one vocabulary (0 = unknown).

        Args:
            name: ``user``, ``item``, ``gender`` or ``occupation``.
            values: Raw values of that vocabulary.

        Returns:
            Int64 indices.
        """
        vocab = {
            "user": (self.user_ids, np.int64),
            "item": (self.item_ids, np.int64),
            "gender": (self.genders, str),
            "occupation": (self.occupations, str),
        }[name]
        return lookup_index(
            np.asarray(vocab[0], dtype=vocab[1]), np.asarray(values, dtype=vocab[1])
        )


def ranking_inputs(spec: RankerSpec, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn raw columns into the Keras model's named inputs.

    Args:
        spec: The model spec.
        columns: ``user_id, item_id, gender, occupation, age, release_year, genre_mask``
            and every numeric feature of ``spec`` (raw values; NaN becomes the mean).

    Returns:
        Arrays keyed by the model's inputs.
    """
    out = {
        "user_idx": spec.index("user", columns["user_id"]),
        "item_idx": spec.index("item", columns["item_id"]),
        "gender_idx": spec.index("gender", columns["gender"]),
        "occupation_idx": spec.index("occupation", columns["occupation"]),
        "age": np.asarray(columns["age"], dtype=np.int64),
        "release_year": np.asarray(columns["release_year"], dtype=np.int64),
        "genre_mask": np.asarray(columns["genre_mask"], dtype=np.int64),
    }
    if spec.numeric:
        values = np.stack(
            [np.asarray(columns[name], dtype=np.float32) for name in spec.numeric], axis=1
        )
        means = np.asarray(spec.numeric_means, dtype=np.float32)
        out[NUMERIC_INPUT] = np.where(np.isfinite(values), values, means).astype(np.float32)
    return out


class Cross(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """DCN-v2 cross layer: ``x0 * (W x + b) + x`` with a full-rank ``W``."""

    def __init__(self, l2: float = 0.0, **kwargs: Any) -> None:
        """Create the layer; ``l2`` penalises ``W``, ``kwargs`` go to Keras."""
        super().__init__(**kwargs)
        self.l2 = float(l2)
        self.dense: keras.layers.Dense | None = None

    def build(self, input_shape: Any) -> None:
        """Create ``W`` and ``b`` as a square Dense over the width of ``x0``."""
        width = int(input_shape[0][-1])
        self.dense = keras.layers.Dense(
            width,
            kernel_regularizer=keras.regularizers.l2(self.l2) if self.l2 else None,
            name="cross_dense",
        )
        self.dense.build(input_shape[1])
        super().build(input_shape)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        """Apply one cross to ``[x0, x]``."""
        x0, x = inputs
        assert self.dense is not None
        return x0 * self.dense(x) + x

    def get_config(self) -> dict[str, Any]:
        """Keras config, for cloning and TF-MOT wrappers."""
        return {**super().get_config(), "l2": self.l2}


class NumericStandardize(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """``(x - mean) / std`` per column of a float matrix; stats are fixed config."""

    def __init__(self, means: Sequence[float], stds: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.means = [float(v) for v in means]
        self.stds = [float(v) for v in stds]

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return (tf.cast(inputs, tf.float32) - tf.constant(self.means)) / tf.constant(self.stds)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "means": self.means, "stds": self.stds}


def build_ranking_model(spec: RankerSpec) -> keras.Model:
    """Build the Functional DCN-v2 ranker.

    Call it inside ``strategy.scope()`` when training under a distribution strategy.

    Args:
        spec: Vocabularies, feature stats and sizes.

    Returns:
        A model taking a dict of ``INT_INPUTS`` (and ``numeric`` when the spec has
        numeric features) and returning ``{"rating": [b, 1], "click": [b, 1] logits}``.
    """
    dim = spec.embedding_dim
    reg = keras.regularizers.l2(spec.l2) if spec.l2 else None
    ints = {name: keras.Input(shape=(), dtype=tf.int64, name=name) for name in INT_INPUTS}
    inputs: dict[str, Any] = dict(ints)

    def embed(name: str, size: int, width: int, idx: Any) -> Any:
        return keras.layers.Embedding(size, width, embeddings_regularizer=reg, name=name)(idx)

    parts = [
        embed("user_id_embedding", len(spec.user_ids) + 1, dim, ints["user_idx"]),
        embed("item_id_embedding", len(spec.item_ids) + 1, dim, ints["item_idx"]),
        embed("gender_embedding", len(spec.genders) + 1, _GENDER_DIM, ints["gender_idx"]),
        embed(
            "occupation_embedding",
            len(spec.occupations) + 1,
            _OCCUPATION_DIM,
            ints["occupation_idx"],
        ),
        Standardize(spec.age_mean, spec.age_std, name="age_standardized")(ints["age"]),
        ReleaseYear(spec.year_mean, spec.year_std, name="year")(ints["release_year"]),
        GenreMultiHot(N_GENRES, name="genres")(ints["genre_mask"]),
    ]
    if spec.numeric:
        numeric = keras.Input(shape=(len(spec.numeric),), dtype=tf.float32, name=NUMERIC_INPUT)
        inputs[NUMERIC_INPUT] = numeric
        parts.append(
            NumericStandardize(spec.numeric_means, spec.numeric_stds, name="numeric_std")(numeric)
        )
    x0 = keras.layers.Concatenate(name="features")(parts)
    x = x0
    for layer in range(spec.cross_layers):
        x = Cross(spec.l2, name=f"cross_{layer}")([x0, x])
    for layer, units in enumerate(spec.deep_units):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=reg, name=f"deep_{layer}"
        )(x)
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{layer}")(x)

    user_bias = keras.layers.Flatten(name="user_bias_flat")(
        embed("user_bias", len(spec.user_ids) + 1, 1, ints["user_idx"])
    )
    item_bias = keras.layers.Flatten(name="item_bias_flat")(
        embed("item_bias", len(spec.item_ids) + 1, 1, ints["item_idx"])
    )
    rating = keras.layers.Dense(
        1,
        bias_initializer=keras.initializers.Constant(spec.rating_mean),
        name="rating_dense",
    )(x)
    rating = keras.layers.Add(name="rating")([rating, user_bias, item_bias])
    click = keras.layers.Dense(1, name="click")(x)
    return keras.Model(inputs=inputs, outputs={"rating": rating, "click": click}, name="dcn")


def save_spec(spec: RankerSpec, folder: Path) -> None:
    """Write ``spec.json`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _SPEC_FILE).write_text(spec.to_json())


class _RankModule(tf.Module):  # type: ignore[misc]  # untyped base
    """Raw-id lookups, the catalogue table and the Keras ranker, as one module."""

    def __init__(
        self, spec: RankerSpec, model: keras.Model, catalogue: Mapping[str, np.ndarray]
    ) -> None:
        super().__init__(name="recops_ranker")
        self.spec = spec
        self.model = model
        self.user_table = int_table(spec.user_ids)
        self.gender_table = string_table(spec.genders)
        self.occupation_table = string_table(spec.occupations)
        item_ids = np.asarray(catalogue["item_id"], dtype=np.int64)
        # Row 0 of each catalogue variable answers unknown items: no id embedding, no
        # genres, unknown year, mean numeric features.
        self.catalogue_table = int_table(tuple(int(v) for v in item_ids))
        self.item_idx = tf.Variable(
            np.concatenate([[OOV_INDEX], spec.index("item", item_ids)]), trainable=False
        )
        self.genre_mask = tf.Variable(
            np.concatenate([[0], np.asarray(catalogue["genre_mask"], np.int64)]),
            trainable=False,
        )
        self.release_year = tf.Variable(
            np.concatenate([[0], np.asarray(catalogue["release_year"], np.int64)]),
            trainable=False,
        )
        n_user = len(spec.user_numeric)
        item_means = np.asarray(spec.numeric_means[n_user:], np.float32)
        if spec.item_numeric:
            values = np.stack(
                [np.asarray(catalogue[n], np.float32) for n in spec.item_numeric], axis=1
            )
            values = np.where(np.isfinite(values), values, item_means)
        else:
            values = np.zeros((item_ids.size, 0), np.float32)
        self.item_numeric = tf.Variable(
            np.concatenate([item_means.reshape(1, -1), values]).astype(np.float32),
            trainable=False,
        )
        signature = {
            "user_id": tf.TensorSpec([None], tf.int64, name="user_id"),
            "age": tf.TensorSpec([None], tf.int64, name="age"),
            "gender": tf.TensorSpec([None], tf.string, name="gender"),
            "occupation": tf.TensorSpec([None], tf.string, name="occupation"),
            **{name: tf.TensorSpec([None], tf.float32, name=name) for name in spec.user_numeric},
            "item_ids": tf.TensorSpec([None, None], tf.int64, name="item_ids"),
        }
        self.rank = tf.function(self._rank, input_signature=[signature])

    def _rank(self, request: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        item_ids = request["item_ids"]
        batch, n = tf.shape(item_ids)[0], tf.shape(item_ids)[1]
        rows = self.catalogue_table.lookup(tf.reshape(item_ids, [-1]))

        def per_pair(t: tf.Tensor) -> tf.Tensor:
            # Row-major flattening: user b's candidates are rows b*n .. b*n+n-1.
            return tf.repeat(t, n, axis=0)

        features = {
            "user_idx": per_pair(self.user_table.lookup(request["user_id"])),
            "gender_idx": per_pair(self.gender_table.lookup(request["gender"])),
            "occupation_idx": per_pair(self.occupation_table.lookup(request["occupation"])),
            "age": per_pair(request["age"]),
            "item_idx": tf.gather(self.item_idx, rows),
            "genre_mask": tf.gather(self.genre_mask, rows),
            "release_year": tf.gather(self.release_year, rows),
        }
        if self.spec.numeric:
            user_part = [
                tf.reshape(per_pair(request[name]), [-1, 1]) for name in self.spec.user_numeric
            ]
            features[NUMERIC_INPUT] = tf.concat(
                [*user_part, tf.gather(self.item_numeric, rows)], axis=1
            )
        out = self.model(features, training=False)
        ratings = tf.clip_by_value(out["rating"][:, 0], self.spec.rating_min, self.spec.rating_max)
        return {
            "scores": tf.reshape(tf.sigmoid(out["click"][:, 0]), [batch, n]),
            "ratings": tf.reshape(ratings, [batch, n]),
        }


def export_ranking_model(
    *,
    model: keras.Model,
    spec: RankerSpec,
    catalogue: Mapping[str, np.ndarray],
    export_dir: Path,
) -> None:
    """Export the ranker SavedModel with its ``rank`` signature (also ``serving_default``).

    ``rank(user_id, age, gender, occupation, <numeric user features>, item_ids[b, n])``
    returns ``scores[b, n]`` (interaction probability) and ``ratings[b, n]`` (clipped to
    the train rating range).

    Args:
        model: A trained model from ``build_ranking_model`` (plain, not distributed).
        spec: Its spec.
        catalogue: ``item_id, genre_mask, release_year`` and the item numeric features,
            one row per item.
        export_dir: Folder to write; must not exist yet.

    Raises:
        ValueError: If the catalogue is empty, has duplicate ids or lacks a column.
    """
    item_ids = np.asarray(catalogue["item_id"], dtype=np.int64)
    if item_ids.size == 0:
        raise ValueError("items catalogue is empty; nothing to rank")
    if np.unique(item_ids).size != item_ids.size:
        raise ValueError("items catalogue has duplicate item_id values")
    missing = [c for c in ("genre_mask", "release_year", *spec.item_numeric) if c not in catalogue]
    if missing:
        raise ValueError(f"items catalogue lacks columns {missing}")
    module = _RankModule(spec, model, catalogue)
    rank = module.rank.get_concrete_function()
    tf.saved_model.save(module, str(export_dir), signatures={"rank": rank, "serving_default": rank})
