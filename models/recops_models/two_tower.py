"""Two-tower retrieval model in tf_keras (Functional), with its loss and SavedModel export.

Importing this module imports TensorFlow. It is model code, referenced only from inside
pipeline tasks (``recops.training``, ``recops.compression``), never at DAG parse time.

The towers are built from the dataset's features (``TwoTowerSpec.user_features`` /
``item_features``), never from fixed column names:

- User tower: user-id embedding plus each user feature's encoding (``recops_models.
  encoders``: embeddings for categoricals, pooled embeddings for multi-valued and text
  features, standardised numerics with a missing flag), concatenated, projected to
  ``embedding_dim`` and L2-normalised.
- Item tower: the same over the item id and the item features.
- Training model: one Functional graph holding both towers; its output is the in-batch
  logit matrix ``user @ item.T / temperature``. Under a distribution strategy each
  replica all-gathers the item side of the global batch, so its users are scored against
  every item of the global batch, not only its own slice: the loss is then the same for
  1 or N replicas (up to float rounding), and the number of negatives does not depend on
  the device count. The loss labels row ``i`` of replica ``r`` with column
  ``r * local_batch + i``.
- Mixed precision (``mixed_float16``, GPU only) keeps the L2-normalised tower outputs,
  the logits and the loss in float32.
- Ids reach the Keras graph as dense indices (0 = out of vocabulary); features arrive
  raw (strings, float32 with NaN for missing) and are looked up inside the graph. The
  exported SavedModel also carries the raw-id vocabularies as hash tables, so serving
  takes raw ids and raw features, named by feature.

Layer names (pruning, clustering, folding and the tower cut rely on them): ``user_idx`` /
``item_idx`` (inputs), ``user_id_embedding`` / ``item_id_embedding``,
``<side>_attr_<feature>_index`` / ``_embedding`` / ``_pool``, ``user_features`` /
``item_features`` (concatenation), ``user_projection`` / ``item_projection``,
``user_embedding`` / ``item_embedding`` (outputs) and ``in_batch_logits``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from recops_models.vocab import OOV_INDEX, lookup_index, sorted_vocab

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.encoders import (  # noqa: E402
    CUSTOM_LAYERS,
    encode_indexed,
    feature_inputs,
    index_layer,
    input_signature,
)

__all__ = [
    "RESERVED_NAMES",
    "InBatchLogits",
    "InBatchSoftmaxLoss",
    "L2Normalize",
    "RetrievalModule",
    "TwoTowerSpec",
    "build_training_model",
    "build_tower",
    "candidate_embeddings",
    "custom_objects",
    "embed_in_batches",
    "export_retrieval_model",
    "feature_prefix",
    "int_table",
    "item_features_of",
    "item_inputs",
    "load_trained_model",
    "model_inputs",
    "save_trained_model",
    "serving_signature",
    "tower_candidates",
    "towers_from_training_model",
    "train_inputs",
    "user_inputs",
]

#: Names the models use themselves; no feature may take one.
RESERVED_NAMES = frozenset({"user_id", "item_id", "user_idx", "item_idx", "item_logq"})
#: Logit given to in-batch "negatives" that are really the row's own positive item.
_MASKED_LOGIT = -1e9
_SPEC_FILE = "spec.json"
_CKPT_PREFIX = "ckpt"


def _table_frame(table: Any, key: str, what: str) -> Any:
    """``table`` (frame or mapping of arrays) as a frame with one row per ``key``, newest."""
    import pandas as pd

    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(dict(table))
    if key not in frame.columns:
        raise ValueError(f"the {what} table has no {key!r} column")
    if "event_timestamp" in frame.columns:
        # Several versions of an entity: the newest holds its current attributes.
        frame = frame.sort_values("event_timestamp", kind="stable")
    return frame.drop_duplicates(key, keep="last")


def _fit_side(
    defs: Sequence[FeatureDef], table: Any, key: str, ids: tuple[int, ...], what: str
) -> tuple[EncodedFeature, ...]:
    frame = _table_frame(table, key, what)
    missing = [d.name for d in defs if d.name not in frame.columns]
    if missing:
        raise ValueError(f"the {what} table lacks the feature column(s) {missing}")
    clash = sorted({d.name for d in defs} & RESERVED_NAMES)
    if clash:
        raise ValueError(f"{what} feature name(s) {clash} are reserved by the model")
    # Fitted on the entities the model trains on: one row each, not one per event.
    keep = frame[frame[key].isin(np.asarray(ids, np.int64))]
    return fit_features(defs, {d.name: keep[d.name].to_numpy() for d in defs})


@dataclass(frozen=True, kw_only=True)
class TwoTowerSpec:
    """Everything needed to rebuild the model graph: vocabularies, features, sizes.

    Id vocabularies are sorted and hold only ids seen in training; index 0 is the
    out-of-vocabulary bucket. Features carry their own vocabularies and statistics.
    """

    user_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    user_features: tuple[EncodedFeature, ...] = ()
    item_features: tuple[EncodedFeature, ...] = ()
    embedding_dim: int = 32
    temperature: float = 0.05

    @classmethod
    def from_tables(
        cls,
        *,
        train: Mapping[str, Any],
        users: Any,
        items: Any,
        user_features: Sequence[FeatureDef],
        item_features: Sequence[FeatureDef],
        embedding_dim: int = 32,
        temperature: float = 0.05,
    ) -> TwoTowerSpec:
        """Fit id vocabularies on the train rows, features on the entities' table rows.

        Args:
            train: Arrays ``user_id`` and ``item_id`` of the train rows.
            users: Frame or mapping of arrays: ``user_id`` plus a column per user
                feature (newest row per user kept when ``event_timestamp`` is there).
            items: The same for items (``item_id`` plus item feature columns).
            user_features: The user features, in model input order.
            item_features: The item features.
            embedding_dim: Output size of both towers.
            temperature: Softmax temperature of the in-batch logits.

        Returns:
            The spec.

        Raises:
            ValueError: If a table lacks its key or a feature column, or a feature takes a
                reserved name.
        """
        user_ids = tuple(int(v) for v in sorted_vocab(np.asarray(train["user_id"], np.int64)))
        item_ids = tuple(int(v) for v in sorted_vocab(np.asarray(train["item_id"], np.int64)))
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            user_features=_fit_side(user_features, users, "user_id", user_ids, "users"),
            item_features=_fit_side(item_features, items, "item_id", item_ids, "items"),
            embedding_dim=embedding_dim,
            temperature=temperature,
        )

    def to_json(self) -> str:
        """Serialise the spec."""
        return json.dumps(
            {
                "user_ids": list(self.user_ids),
                "item_ids": list(self.item_ids),
                "user_features": encoded_to_json(self.user_features),
                "item_features": encoded_to_json(self.item_features),
                "embedding_dim": self.embedding_dim,
                "temperature": self.temperature,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TwoTowerSpec:
        """Rebuild a spec written by ``to_json``."""
        raw = json.loads(text)
        return cls(
            user_ids=tuple(int(v) for v in raw["user_ids"]),
            item_ids=tuple(int(v) for v in raw["item_ids"]),
            user_features=encoded_from_json(raw.get("user_features", ())),
            item_features=encoded_from_json(raw.get("item_features", ())),
            embedding_dim=int(raw["embedding_dim"]),
            temperature=float(raw["temperature"]),
        )

    def user_index(self, user_id: Any) -> np.ndarray:
        """Dense indices of raw user ids (0 = unknown)."""
        return lookup_index(
            np.asarray(self.user_ids, dtype=np.int64), np.asarray(user_id, np.int64)
        )

    def item_index(self, item_id: Any) -> np.ndarray:
        """Dense indices of raw item ids (0 = unknown)."""
        return lookup_index(
            np.asarray(self.item_ids, dtype=np.int64), np.asarray(item_id, np.int64)
        )


def user_inputs(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The user tower's input names: ``user_idx`` then each user feature."""
    return ("user_idx", *(f.name for f in spec.user_features))


def item_inputs(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The item tower's input names: ``item_idx`` then each item feature."""
    return ("item_idx", *(f.name for f in spec.item_features))


def train_inputs(spec: TwoTowerSpec) -> tuple[str, ...]:
    """The training model's input names (both towers plus ``item_logq``)."""
    return (*user_inputs(spec), *item_inputs(spec), "item_logq")


def model_inputs(
    spec: TwoTowerSpec, columns: Mapping[str, Any], item_logq: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Turn raw training columns into the training model's named inputs.

    Args:
        spec: The model spec (vocabularies, features).
        columns: Arrays ``user_id``, ``item_id`` and one per user and item feature, of
            equal length (extra columns are ignored).
        item_logq: Log sampling probability of each row's item; zeros (no logQ
            correction) when None.

    Returns:
        Arrays keyed by ``train_inputs(spec)``: dense id indices, raw feature arrays
        (strings with ``""`` for missing, float32 with NaN) and ``item_logq``.

    Raises:
        ValueError: If a feature column is missing.
    """
    missing = [
        name
        for name in ("user_id", "item_id", *(f.name for f in spec.user_features),
                     *(f.name for f in spec.item_features))
        if name not in columns
    ]  # fmt: skip
    if missing:
        raise ValueError(f"the training columns lack {missing}")
    n = len(columns["user_id"])
    logq = np.zeros(n, np.float32) if item_logq is None else np.asarray(item_logq, np.float32)
    return {
        "user_idx": spec.user_index(columns["user_id"]),
        **raw_inputs(spec.user_features, columns),
        "item_idx": spec.item_index(columns["item_id"]),
        **raw_inputs(spec.item_features, columns),
        "item_logq": logq,
    }


def feature_prefix(side: str) -> str:
    """Layer-name prefix of a tower's feature layers (``user_attr_`` / ``item_attr_``)."""
    return f"{side}_attr_"


class L2Normalize(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """Scale each row to unit length, so dot products are cosine similarities."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(inputs, axis=-1)


def _replica_offset(local_rows: tf.Tensor) -> tf.Tensor | int:
    """Position of this replica's first row in the global batch (0 without a strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0
    return tf.cast(context.replica_id_in_sync_group, tf.int32) * local_rows


class InBatchLogits(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """Logits of every user in the replica's batch against every item of the global batch.

    ``logits[i, j] = u_i . v_j / temperature - logq_j``, where ``j`` runs over the items
    all-gathered from every replica (``cross_replica=True``) or over the replica's own
    slice only. Entries whose item equals row ``i``'s own item, other than its positive,
    are masked: they are not negatives.
    """

    def __init__(self, temperature: float, cross_replica: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.cross_replica = bool(cross_replica)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        user, item, item_idx, item_logq = inputs
        local_idx = item_idx
        item_logq = tf.cast(item_logq, tf.float32)
        local_rows = tf.shape(user)[0]
        offset: tf.Tensor | int = 0
        context = tf.distribute.get_replica_context()
        if self.cross_replica and context is not None and context.num_replicas_in_sync > 1:
            offset = _replica_offset(local_rows)
            # One float tensor per gather: all_gather's gradient cannot pass int inputs.
            # Item indices stay exact in float32 up to 2**24 items.
            packed = tf.concat(
                [
                    tf.cast(item, tf.float32),
                    tf.cast(tf.expand_dims(item_idx, 1), tf.float32),
                    tf.expand_dims(item_logq, 1),
                ],
                axis=1,
            )
            # all_gather is differentiable: each replica's item tower gets the gradient
            # of every replica's loss through its own rows.
            gathered = context.all_gather(packed, axis=0)
            dim = tf.shape(item)[1]
            item = gathered[:, :dim]
            item_idx = tf.cast(gathered[:, dim], local_idx.dtype)
            item_logq = gathered[:, dim + 1]
        logits = tf.matmul(user, item, transpose_b=True) / self.temperature
        logits -= tf.expand_dims(item_logq, 0)
        same = tf.equal(tf.expand_dims(local_idx, 1), tf.expand_dims(item_idx, 0))
        positive = tf.one_hot(
            tf.range(local_rows) + offset, tf.shape(item_idx)[0], on_value=True, off_value=False
        )
        accidental = tf.logical_and(same, tf.logical_not(positive))
        return tf.where(accidental, tf.constant(_MASKED_LOGIT, tf.float32), logits)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "cross_replica": self.cross_replica,
        }


class InBatchSoftmaxLoss(keras.losses.Loss):  # type: ignore[misc]  # untyped base
    """Softmax cross-entropy where row ``i`` of replica ``r``'s positive is its own item.

    ``y_true`` is ignored. When the logits span the global batch (``y_pred`` has more
    columns than rows), row ``i``'s positive is column ``r * rows + i``; otherwise it is
    column ``i`` of the replica's own slice.
    """

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        """Per-row loss of the logits ``y_pred`` ``[rows, columns]``."""
        rows = tf.shape(y_pred)[0]
        offset = _replica_offset(rows)
        # Local-slice logits are square; only gathered logits need the replica offset.
        offset = tf.where(tf.shape(y_pred)[1] > rows, offset, 0)
        labels = tf.range(rows) + offset
        return keras.losses.sparse_categorical_crossentropy(
            labels, tf.cast(y_pred, tf.float32), from_logits=True
        )


def custom_objects() -> dict[str, Any]:
    """The custom layers of the two-tower by class name (``clone_model``, ``quantize_scope``)."""
    return {**CUSTOM_LAYERS, "L2Normalize": L2Normalize, "InBatchLogits": InBatchLogits}


def build_tower(spec: TwoTowerSpec, side: str, id_index: Any, indexed: Mapping[str, Any]) -> Any:
    """One tower from its id indices and its features' index tensors.

    Args:
        spec: Vocabularies, features and sizes.
        side: ``user`` or ``item``.
        id_index: Dense id indices ``int64 [b]`` (0 = unknown).
        indexed: Each feature's index tensor (``encoders.index_layer`` outputs, or
            ``encoders.indexed_inputs`` for a model fed pre-indexed features).

    Returns:
        The L2-normalised float32 tower output ``[b, embedding_dim]``, from a layer named
        ``<side>_embedding``.
    """
    dim = spec.embedding_dim
    ids, features = (
        (spec.user_ids, spec.user_features)
        if side == "user"
        else (spec.item_ids, spec.item_features)
    )
    parts = [keras.layers.Embedding(len(ids) + 1, dim, name=f"{side}_id_embedding")(id_index)]
    parts += encode_indexed(features, indexed, feature_prefix(side))
    hidden = (
        keras.layers.Concatenate(name=f"{side}_features")(parts) if len(parts) > 1 else parts[0]
    )
    hidden = keras.layers.Dense(dim, name=f"{side}_projection")(hidden)
    return L2Normalize(name=f"{side}_embedding", dtype="float32")(hidden)


def _raw_tower(spec: TwoTowerSpec, side: str) -> tuple[dict[str, Any], Any]:
    """The raw inputs of one tower and its output (index layers inside the graph)."""
    features = spec.user_features if side == "user" else spec.item_features
    id_input = keras.Input(shape=(), dtype=tf.int64, name=f"{side}_idx")
    raw = feature_inputs(features)
    prefix = feature_prefix(side)
    indexed = {f.name: index_layer(f, f"{prefix}{f.name}_index")(raw[f.name]) for f in features}
    return {f"{side}_idx": id_input, **raw}, build_tower(spec, side, id_input, indexed)


def build_training_model(
    spec: TwoTowerSpec, *, mixed_precision: bool = False, cross_replica: bool = True
) -> keras.Model:
    """Build the Functional training model (both towers plus in-batch logits).

    Call it inside ``strategy.scope()`` when training under a distribution strategy.

    Args:
        spec: Vocabularies, features and sizes.
        mixed_precision: Build under the ``mixed_float16`` policy (float16 compute,
            float32 variables, tower outputs and logits in float32); ``compile`` then
            wraps the optimizer in a loss-scale optimizer. The weights are the same
            variables either way, so checkpoints load into a float32 model.
        cross_replica: Score each replica's users against the items of the whole global
            batch (see the module docstring); False keeps the replica's own slice.

    Returns:
        A model taking a dict keyed by ``train_inputs(spec)`` (``model_inputs``' output)
        and returning float32 logits ``[batch, global batch]``. Layer names
        ``user_embedding`` and ``item_embedding`` mark the tower outputs (see
        ``towers_from_training_model``).
    """
    previous = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        user_in, user = _raw_tower(spec, "user")
        item_in, item = _raw_tower(spec, "item")
        item_logq = keras.Input(shape=(), dtype=tf.float32, name="item_logq")
        logits = InBatchLogits(
            spec.temperature, cross_replica=cross_replica, name="in_batch_logits", dtype="float32"
        )([user, item, item_in["item_idx"], item_logq])
        return keras.Model(
            inputs={**user_in, **item_in, "item_logq": item_logq}, outputs=logits, name="two_tower"
        )
    finally:
        # The policy is process-global; export and compression build float32 models.
        keras.mixed_precision.set_global_policy(previous)


def _side_inputs(model: keras.Model, side: str) -> dict[str, Any]:
    """The input tensors of one tower: its id input and the inputs of its feature layers."""
    layers = {layer.name for layer in model.layers}
    prefix = feature_prefix(side)
    names = [f"{side}_idx"] + [n for n in model.input_names if f"{prefix}{n}_index" in layers]
    return {name: model.get_layer(name).output for name in names}


def towers_from_training_model(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Cut the user and item towers out of a (possibly cloned) training model.

    Args:
        model: A model from ``build_training_model`` or a clone of it with the original
            layer names (for example after ``strip_pruning``).

    Returns:
        ``(user_tower, item_tower)``, sharing the training model's layers and weights;
        they take dicts keyed by ``user_inputs(spec)`` / ``item_inputs(spec)``.
    """
    user_tower = keras.Model(
        inputs=_side_inputs(model, "user"),
        outputs=model.get_layer("user_embedding").output,
        name="user_tower",
    )
    item_tower = keras.Model(
        inputs=_side_inputs(model, "item"),
        outputs=model.get_layer("item_embedding").output,
        name="item_tower",
    )
    return user_tower, item_tower


def save_trained_model(model: keras.Model, spec: TwoTowerSpec, weights_dir: Path) -> None:
    """Write the spec and weights (TF checkpoint) so the model can be rebuilt exactly.

    Args:
        model: A training model built from ``spec`` (weights only; no optimizer state).
        spec: Its spec.
        weights_dir: Folder to create.
    """
    weights_dir.mkdir(parents=True, exist_ok=True)
    (weights_dir / _SPEC_FILE).write_text(spec.to_json())
    model.save_weights(str(weights_dir / _CKPT_PREFIX))


def load_trained_model(weights_dir: Path) -> tuple[keras.Model, TwoTowerSpec]:
    """Rebuild a model written by ``save_trained_model``.

    Call it inside ``strategy.scope()`` to get distributed variables.

    Args:
        weights_dir: Folder holding ``spec.json`` and the ``ckpt`` checkpoint.

    Returns:
        ``(model, spec)``.

    Raises:
        FileNotFoundError: If the spec or checkpoint is missing.
    """
    spec_path = weights_dir / _SPEC_FILE
    if not spec_path.is_file():
        raise FileNotFoundError(f"no model spec at {spec_path}")
    if not (weights_dir / f"{_CKPT_PREFIX}.index").is_file():
        raise FileNotFoundError(f"no weights checkpoint {_CKPT_PREFIX}.index in {weights_dir}")
    spec = TwoTowerSpec.from_json(spec_path.read_text())
    model = build_training_model(spec)
    model.load_weights(str(weights_dir / _CKPT_PREFIX)).assert_existing_objects_matched()
    return model, spec


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
    """Inputs of ``serving_default`` and ``user_embedding``: ``user_id`` then each user
    feature, named by the feature (``[None]``, int64 / tf.string / float32)."""
    return [tf.TensorSpec([None], tf.int64, name="user_id"), *input_signature(spec.user_features)]


class RetrievalModule(tf.Module, metaclass=abc.ABCMeta):  # type: ignore[misc]  # untyped base
    """The three retrieval signatures over a user embedding and stored candidates.

    Subclasses say how a user is embedded (``embed``) and how candidates are stored
    (``scores``, ``candidate_matrix``); the signatures, their input names (the spec's user
    features) and their outputs are the same for every retrieval export.
    """

    def __init__(self, spec: TwoTowerSpec, candidate_ids: np.ndarray, k: int) -> None:
        super().__init__(name="recops_retrieval")
        self.user_table = int_table(spec.user_ids)
        # Variables, not constants: constants would be copied into every function graph.
        self.candidate_ids = tf.Variable(
            np.asarray(candidate_ids, np.int64), trainable=False, name="candidate_ids"
        )
        self.k = int(k)
        signature = serving_signature(spec)
        names = tuple(str(s.name) for s in signature)

        # Inputs differ per dataset, so the functions take positional tensors and name
        # them from the signature: the saved signatures keep the TensorSpec names.
        def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            user = self.embed(dict(zip(names, args, strict=True)))
            top = tf.math.top_k(self.scores(user), k=self.k)
            return {"item_ids": tf.gather(self.candidate_ids, top.indices), "scores": top.values}

        def user_embedding(*args: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"embedding": self.embed(dict(zip(names, args, strict=True)))}

        def item_embeddings() -> dict[str, tf.Tensor]:
            return {
                "item_ids": tf.identity(self.candidate_ids),
                "embeddings": self.candidate_matrix(),
            }

        self.serve = tf.function(serve, input_signature=signature)
        self.user_embedding = tf.function(user_embedding, input_signature=signature)
        self.item_embeddings = tf.function(item_embeddings, input_signature=[])

    @abc.abstractmethod
    def embed(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """User embeddings ``[b, dim]`` of the raw signature inputs."""

    @abc.abstractmethod
    def scores(self, user: tf.Tensor) -> tf.Tensor:
        """``user @ candidates.T``."""

    @abc.abstractmethod
    def candidate_matrix(self) -> tf.Tensor:
        """Every candidate's embedding as float32 ``[n, dim]``."""

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
        return self.user_tower(features, training=False)

    def scores(self, user: tf.Tensor) -> tf.Tensor:
        return tf.matmul(user, self.candidates, transpose_b=True)

    def candidate_matrix(self) -> tf.Tensor:
        return tf.identity(self.candidates)


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


def candidate_embeddings(
    model: keras.Model, spec: TwoTowerSpec, items: Mapping[str, Any], batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the catalogue with the model's item tower.

    Args:
        model: A training model (plain) built from ``spec``.
        spec: Its spec.
        items: Catalogue arrays ``item_id`` plus one per item feature (one row per item).
        batch_size: Items per call.

    Returns:
        ``(item_ids int64 [n], embeddings float32 [n, dim])``.

    Raises:
        ValueError: If the catalogue is empty, has duplicate ids or lacks a feature.
    """
    _, item_tower = towers_from_training_model(model)
    return tower_candidates(item_tower, spec, items, batch_size)


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


def export_retrieval_model(
    *,
    model: keras.Model,
    spec: TwoTowerSpec,
    items: Mapping[str, Any],
    export_dir: Path,
    k: int,
    batch_size: int = 8192,
) -> int:
    """Export the retrieval SavedModel, candidate embeddings precomputed by the item tower.

    Signatures (``serving_signature(spec)`` names the inputs):
    ``serving_default(user_id, <user features>) -> item_ids int64 [b, k], scores``,
    ``user_embedding(same) -> embedding`` and ``item_embeddings() -> item_ids,
    embeddings``. Unknown user ids, unknown categories and missing numerics are valid
    inputs (out-of-vocabulary rows, the missing flag).

    Args:
        model: A trained training model (plain, not distributed, not pruning-wrapped).
        spec: Its spec.
        items: Catalogue arrays ``item_id`` plus one per item feature (one row per item).
        export_dir: Folder to write; must not exist yet.
        k: Candidates returned by ``serving_default``; capped at the catalogue size.
        batch_size: Items embedded per call.

    Returns:
        The ``k`` actually used.

    Raises:
        ValueError: If the catalogue is empty, has duplicate ids or lacks a feature.
    """
    item_ids, embeddings = candidate_embeddings(model, spec, items, batch_size)
    user_tower, _ = towers_from_training_model(model)
    k = min(k, int(item_ids.size))
    _FloatRetrievalModule(spec, user_tower, item_ids, embeddings, k).save(export_dir)
    return k
