"""DCN-v2 ranker in tf_keras (Functional), with its SavedModel export.

Importing this module imports TensorFlow. It is model code, referenced only from inside
pipeline tasks (``recops.ranking``), never at DAG parse time.

Nothing here knows a dataset: the features come from the spec (``RankerSpec``).

- Inputs: user-id and item-id embeddings, the user's and the item's attributes encoded by
  ``recops_models.encoders`` (embeddings of categoricals, pooled embeddings of multi-valued
  categoricals and hashed text, standardised numerics with a "missing" flag), and the
  numeric context features (recent activity, popularity; standardised the same way).
  With a ``history_length``, also the user's history (``HISTORY_INPUT``, raw item ids,
  newest first): the recency-weighted mean of its items' id embeddings (the same table
  as the candidate's), and that mean times the candidate's embedding, so the ranker
  scores each candidate against what the user just did, as retrieval does.
- Body: ``cross_layers`` DCN-v2 cross layers (``x_{l+1} = x_0 * (W x_l + b) + x_l``,
  full-rank ``W``) stacked under a ReLU MLP.
- Heads: ``weight`` (regression on the interaction's weight: global mean plus user and
  item biases plus the MLP's output) and ``click`` (a logit: observed interaction vs
  sampled negative).
- Export: a ``rank`` signature scoring each user against a list of candidate item ids.
  Item attributes and item context features live in a catalogue inside the SavedModel
  (one row per item, row 0 for unknown items), so callers send only ids.

Unknown ids, unknown categories and missing numbers are never an error: ids and
categories take their out-of-vocabulary rows, missing numbers their "missing" flag.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recops_models.contract import HISTORY_INPUT
from recops_models.feature_defs import (
    EncodedFeature,
    FeatureDef,
    catalogue_ids,
    encoded_from_json,
    encoded_to_json,
    fit_features,
    raw_inputs,
)
from recops_models.tf_env import use_legacy_keras

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.encoders import (  # noqa: E402
    RecencyPool,
    encode_indexed,
    feature_inputs,
    index_layer,
    index_layer_name,
    input_signature,
)

__all__ = [
    "CONTEXT_FEATURES_ATTRIBUTE",
    "RESERVED_NAMES",
    "Cross",
    "RankerSpec",
    "build_ranking_model",
    "export_ranking_model",
    "ranking_inputs",
    "save_spec",
]

#: Names the ranker uses for itself; no feature may take them.
RESERVED_NAMES = ("user_id", "item_id", "item_ids", "weight", "click", HISTORY_INPUT)
#: Attribute of the exported module (a string variable) listing the context features the
#: caller of ``rank`` sends, so a client can tell them from the user's profile features
#: (``recops.rank_signature.rank_inputs`` reads it).
CONTEXT_FEATURES_ATTRIBUTE = "context_features"
_SPEC_FILE = "spec.json"
#: Layer-name prefixes of the three feature groups, so their layers never collide.
_PREFIXES = {"user": "user_", "item": "item_", "context": "context_"}
#: Spec fields holding ``EncodedFeature`` tuples (serialised with ``encoded_to_json``).
_FEATURE_FIELDS = ("user_features", "item_features", "user_context", "item_context")


def _numeric_defs(names: Sequence[str]) -> tuple[FeatureDef, ...]:
    return tuple(FeatureDef(name, "numeric") for name in names)


def _ids(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unique(np.asarray(values, dtype=np.int64)))


def _entity_columns(table: Mapping[str, Any], key: str, keep: np.ndarray) -> dict[str, Any]:
    """The rows of ``table`` whose ``key`` is in ``keep`` (the train split's entities)."""
    rows = np.isin(np.asarray(table[key], dtype=np.int64), keep)
    return {name: np.asarray(values)[rows] for name, values in table.items()}


@dataclass(frozen=True, kw_only=True)
class RankerSpec:
    """Everything needed to rebuild the ranker graph: vocabularies, feature stats, sizes.

    Attributes:
        user_ids: Users with an id embedding (the train split's), sorted.
        item_ids: Items with an id embedding, sorted.
        user_features: User attributes, as the caller sends them with each request.
        item_features: Item attributes, looked up in the exported catalogue.
        user_context: Numeric context features sent with each request (user activity).
        item_context: Numeric context features per item, kept in the catalogue.
        weight_mean: Mean train weight (the weight head's starting bias).
        weight_min: Smallest train weight (predictions are clipped to the range).
        weight_max: Largest train weight.
        embedding_dim: Size of the user and item id embeddings.
        cross_layers: DCN-v2 cross layers.
        deep_units: Widths of the MLP above the cross layers.
        l2: L2 penalty on embeddings and kernels.
        dropout: Dropout after each MLP layer.
        history_length: Newest history entries the ranker pools (0: no history input).
    """

    user_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    user_features: tuple[EncodedFeature, ...] = ()
    item_features: tuple[EncodedFeature, ...] = ()
    user_context: tuple[EncodedFeature, ...] = ()
    item_context: tuple[EncodedFeature, ...] = ()
    weight_mean: float = 0.0
    weight_min: float = 0.0
    weight_max: float = 1.0
    embedding_dim: int = 32
    cross_layers: int = 2
    deep_units: tuple[int, ...] = (128, 64)
    l2: float = 0.0
    dropout: float = 0.0
    history_length: int = 0

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        clash = sorted({n for n in names if names.count(n) > 1} | set(names) & set(RESERVED_NAMES))
        if clash:
            raise ValueError(
                f"ranker features {clash} are named twice or take a reserved name "
                f"({', '.join(RESERVED_NAMES)}); rename the attribute or context feature"
            )
        for name in ("user_context", "item_context"):
            kinds = {f.kind for f in getattr(self, name)}
            if not kinds <= {"numeric", "timestamp"}:
                raise ValueError(f"RankerSpec.{name} must be numeric, got kinds {sorted(kinds)}")

    @property
    def features(self) -> tuple[EncodedFeature, ...]:
        """Every encoded feature in model order: user, item, user context, item context."""
        return (*self.user_features, *self.item_features, *self.user_context, *self.item_context)

    @property
    def request_features(self) -> tuple[EncodedFeature, ...]:
        """The per-user features a ``rank`` request carries: attributes, then context."""
        return (*self.user_features, *self.user_context)

    @property
    def catalogue_features(self) -> tuple[EncodedFeature, ...]:
        """The per-item features the exported catalogue holds: attributes, then context."""
        return (*self.item_features, *self.item_context)

    @classmethod
    def fit(
        cls,
        *,
        train: Mapping[str, Any],
        users: Mapping[str, Any],
        items: Mapping[str, Any],
        user_defs: Sequence[FeatureDef] = (),
        item_defs: Sequence[FeatureDef] = (),
        user_context: Sequence[str] = (),
        item_context: Sequence[str] = (),
        **sizes: Any,
    ) -> RankerSpec:
        """Fit id vocabularies, attribute vocabularies and stats, and context stats.

        Attribute vocabularies and statistics are learned from the users and items
        tables (one row per entity) restricted to the entities of ``train``, so a
        frequent user does not weigh more than a rare one, and nothing outside the train
        split leaks in. Context statistics come from the train rows, where they vary.

        Args:
            train: Train rows: ``user_id, item_id, weight`` and the context features.
            users: ``user_id`` and each of ``user_defs``, one row per user.
            items: ``item_id`` and each of ``item_defs``, one row per item.
            user_defs: User attributes, in model order.
            item_defs: Item attributes, in model order.
            user_context: Numeric context features sent with each request.
            item_context: Numeric context features kept per item in the catalogue.
            **sizes: ``embedding_dim``, ``cross_layers``, ``deep_units``, ``l2``,
                ``dropout``, ``history_length``.

        Returns:
            The spec.

        Raises:
            KeyError: If a column is missing.
            ValueError: If ``train`` is empty or a name is reserved or used twice.
        """
        user_ids, item_ids = _ids(train["user_id"]), _ids(train["item_id"])
        weights = np.asarray(train["weight"], dtype=np.float64)
        weights = weights[np.isfinite(weights)]
        if weights.size == 0:
            raise ValueError("no train rows with a finite weight to fit the ranker on")
        user_rows = _entity_columns(users, "user_id", np.asarray(user_ids, np.int64))
        item_rows = _entity_columns(items, "item_id", np.asarray(item_ids, np.int64))
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            user_features=fit_features(user_defs, user_rows),
            item_features=fit_features(item_defs, item_rows),
            user_context=fit_features(_numeric_defs(user_context), train),
            item_context=fit_features(_numeric_defs(item_context), train),
            weight_mean=float(weights.mean()),
            weight_min=float(weights.min()),
            weight_max=float(weights.max()),
            **sizes,
        )

    def to_json(self) -> str:
        """Serialise the spec."""
        raw = asdict(self)
        for name in _FEATURE_FIELDS:
            raw[name] = encoded_to_json(getattr(self, name))
        return json.dumps(raw)

    @classmethod
    def from_json(cls, text: str) -> RankerSpec:
        """Rebuild a spec written by ``to_json``."""
        raw: dict[str, Any] = json.loads(text)
        fields: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _FEATURE_FIELDS:
                fields[key] = encoded_from_json(value)
            else:
                fields[key] = tuple(value) if isinstance(value, list) else value
        return cls(**fields)


def ranking_inputs(spec: RankerSpec, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Turn raw columns into the Keras model's named inputs.

    Args:
        spec: The model spec.
        columns: ``user_id``, ``item_id`` and every feature of ``spec`` (raw values:
            missing strings as None or ``""``, missing numbers as NaN); with a
            ``history_length``, also ``HISTORY_INPUT`` (raw item ids ``[n, L]``,
            ``HISTORY_PAD``-padded, newest first).

    Returns:
        Arrays keyed by the model's inputs: ids as int64, features as the encoders take
        them (strings, or float32 with NaN for missing).
    """
    history = {}
    if spec.history_length:
        rows = np.asarray(columns[HISTORY_INPUT], np.int64)
        history = {HISTORY_INPUT: rows.reshape(len(rows), -1)[:, : spec.history_length]}
    return {
        "user_id": np.asarray(columns["user_id"], dtype=np.int64),
        "item_id": np.asarray(columns["item_id"], dtype=np.int64),
        **raw_inputs(spec.features, columns),
        **history,
    }


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


def _encoded(features: Sequence[EncodedFeature], raw: Mapping[str, Any], group: str) -> list[Any]:
    """One dense tensor per feature of ``group``, through the shared encoders."""
    prefix = _PREFIXES[group]
    indexed = {f.name: index_layer(f, index_layer_name(prefix, f))(raw[f.name]) for f in features}
    return encode_indexed(features, indexed, prefix)


def build_ranking_model(spec: RankerSpec) -> keras.Model:
    """Build the Functional DCN-v2 ranker.

    Call it inside ``strategy.scope()`` when training under a distribution strategy.

    Args:
        spec: Vocabularies, feature stats and sizes.

    Returns:
        A model taking ``ranking_inputs`` (raw ids and raw features, lookups inside) and
        returning ``{"weight": [b, 1], "click": [b, 1] logits}``.
    """
    dim = spec.embedding_dim
    reg = keras.regularizers.l2(spec.l2) if spec.l2 else None
    user_id = keras.Input(shape=(), dtype=tf.int64, name="user_id")
    item_id = keras.Input(shape=(), dtype=tf.int64, name="item_id")
    raw = feature_inputs(spec.features)
    # Position in the sorted id vocabulary, 0 for an id training never saw.
    user_idx = keras.layers.IntegerLookup(
        vocabulary=list(spec.user_ids), num_oov_indices=1, mask_token=None, name="dcn_user_idx"
    )(user_id)
    item_lookup = keras.layers.IntegerLookup(
        vocabulary=list(spec.item_ids), num_oov_indices=1, mask_token=None, name="dcn_item_idx"
    )
    item_idx = item_lookup(item_id)

    def embed(name: str, size: int, width: int, idx: Any) -> Any:
        return keras.layers.Embedding(size, width, embeddings_regularizer=reg, name=name)(idx)

    item_rows = keras.layers.Embedding(
        len(spec.item_ids) + 1, dim, embeddings_regularizer=reg, name="dcn_item_id_embedding"
    )
    item_vector = item_rows(item_idx)
    parts = [
        embed("dcn_user_id_embedding", len(spec.user_ids) + 1, dim, user_idx),
        item_vector,
        *_encoded(spec.user_features, raw, "user"),
        *_encoded(spec.item_features, raw, "item"),
        *_encoded((*spec.user_context, *spec.item_context), raw, "context"),
    ]
    history_in = {}
    if spec.history_length:
        history = keras.Input(shape=(None,), dtype=tf.int64, name=HISTORY_INPUT)
        history_in = {HISTORY_INPUT: history}
        # Padding (-1) and unknown items look up the out-of-vocabulary row 0, which the
        # pool skips.
        history_idx = item_lookup(history)
        pooled = RecencyPool(name="dcn_history_pool")([item_rows(history_idx), history_idx])
        affinity = keras.layers.Multiply(name="dcn_history_affinity")([pooled, item_vector])
        parts += [pooled, affinity]
    x0 = keras.layers.Concatenate(name="dcn_features")(parts)
    x = x0
    for layer in range(spec.cross_layers):
        x = Cross(spec.l2, name=f"dcn_cross_{layer}")([x0, x])
    for layer, units in enumerate(spec.deep_units):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=reg, name=f"dcn_deep_{layer}"
        )(x)
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"dcn_dropout_{layer}")(x)

    user_bias = keras.layers.Flatten(name="dcn_user_bias_flat")(
        embed("dcn_user_bias", len(spec.user_ids) + 1, 1, user_idx)
    )
    item_bias = keras.layers.Flatten(name="dcn_item_bias_flat")(
        embed("dcn_item_bias", len(spec.item_ids) + 1, 1, item_idx)
    )
    weight = keras.layers.Dense(
        1,
        bias_initializer=keras.initializers.Constant(spec.weight_mean),
        name="dcn_weight_dense",
    )(x)
    weight = keras.layers.Add(name="weight")([weight, user_bias, item_bias])
    click = keras.layers.Dense(1, name="click")(x)
    inputs = {"user_id": user_id, "item_id": item_id, **raw, **history_in}
    return keras.Model(inputs=inputs, outputs={"weight": weight, "click": click}, name="dcn")


def save_spec(spec: RankerSpec, folder: Path) -> None:
    """Write ``spec.json`` into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _SPEC_FILE).write_text(spec.to_json())


def _catalogue_column(feature: EncodedFeature, values: np.ndarray) -> tf.Variable:
    """One catalogue feature as a variable; row 0 (unknown items) holds "missing"."""
    if feature.is_string:
        column = np.concatenate([[""], np.asarray(values, dtype=str)]).astype(object)
        return tf.Variable(tf.constant(column, tf.string), trainable=False)
    column = np.concatenate([[np.nan], np.asarray(values, dtype=np.float32)]).astype(np.float32)
    return tf.Variable(column, trainable=False)


class _RankModule(tf.Module):  # type: ignore[misc]  # untyped base
    """The item catalogue and the Keras ranker, as one module with a ``rank`` function."""

    def __init__(
        self, spec: RankerSpec, model: keras.Model, catalogue: Mapping[str, np.ndarray]
    ) -> None:
        super().__init__(name="recops_ranker")
        self.spec = spec
        self.model = model
        item_ids = np.asarray(catalogue["item_id"], dtype=np.int64)
        # Item id -> catalogue row; unknown items read row 0 (an unknown id with every
        # feature missing), so they are scored, never an error.
        self.catalogue_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(item_ids, tf.int64),
                tf.range(1, item_ids.size + 1, dtype=tf.int64),
            ),
            default_value=0,
        )
        self.catalogue = {
            f.name: _catalogue_column(f, raw_inputs((f,), catalogue)[f.name])
            for f in spec.catalogue_features
        }
        setattr(
            self,
            CONTEXT_FEATURES_ATTRIBUTE,
            tf.Variable(
                tf.constant(
                    [f.name for f in spec.user_context], tf.string, shape=[len(spec.user_context)]
                ),
                trainable=False,
            ),
        )
        # Named specs and a positional body: feature names are data, not Python names.
        history = (HISTORY_INPUT,) if spec.history_length else ()
        self.request_names = (
            "user_id", *(f.name for f in spec.request_features), *history, "item_ids"
        )  # fmt: skip
        signature = [
            tf.TensorSpec([None], tf.int64, name="user_id"),
            *input_signature(spec.request_features),
            *(tf.TensorSpec([None, None], tf.int64, name=name) for name in history),
            tf.TensorSpec([None, None], tf.int64, name="item_ids"),
        ]
        self.rank = tf.function(self._rank, input_signature=signature)

    def _rank(self, *args: tf.Tensor) -> dict[str, tf.Tensor]:
        request = dict(zip(self.request_names, args, strict=True))
        item_ids = request.pop("item_ids")
        if HISTORY_INPUT in request:
            request[HISTORY_INPUT] = request[HISTORY_INPUT][:, : self.spec.history_length]
        batch, n = tf.shape(item_ids)[0], tf.shape(item_ids)[1]
        flat_items = tf.reshape(item_ids, [-1])
        rows = self.catalogue_rows.lookup(flat_items)
        # Row-major flattening: user b's candidates are rows b*n .. b*n+n-1.
        features = {name: tf.repeat(value, n, axis=0) for name, value in request.items()}
        features["item_id"] = flat_items
        for name, column in self.catalogue.items():
            features[name] = tf.gather(column, rows)
        out = self.model(features, training=False)
        weights = tf.clip_by_value(out["weight"][:, 0], self.spec.weight_min, self.spec.weight_max)
        return {
            "scores": tf.reshape(tf.sigmoid(out["click"][:, 0]), [batch, n]),
            "ratings": tf.reshape(weights, [batch, n]),
        }


def export_ranking_model(
    *,
    model: keras.Model,
    spec: RankerSpec,
    catalogue: Mapping[str, np.ndarray],
    export_dir: Path,
) -> None:
    """Export the ranker SavedModel with its ``rank`` signature (also ``serving_default``).

    ``rank(user_id, <user features>, <user context features>[, history_item_ids],
    item_ids[b, n])`` returns
    ``scores[b, n]`` (interaction probability) and ``ratings[b, n]`` (the predicted
    weight, clipped to the train range). The module's ``context_features`` variable
    lists the context features.

    Args:
        model: A trained model from ``build_ranking_model`` (plain, not distributed).
        spec: Its spec.
        catalogue: ``item_id``, each item feature and each item context feature, one row
            per item (missing values as None / NaN).
        export_dir: Folder to write; must not exist yet.

    Raises:
        ValueError: If the catalogue is empty, has duplicate ids or lacks a column.
    """
    catalogue_ids(catalogue, "rank")
    missing = [f.name for f in spec.catalogue_features if f.name not in catalogue]
    if missing:
        raise ValueError(f"items catalogue lacks columns {missing}")
    module = _RankModule(spec, model, catalogue)
    rank = module.rank.get_concrete_function()
    tf.saved_model.save(module, str(export_dir), signatures={"rank": rank, "serving_default": rank})
