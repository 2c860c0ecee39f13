"""Two-tower retrieval model in tf_keras (Functional), with its loss and SavedModel export.

Importing this module imports TensorFlow. It is model code, referenced only from inside
pipeline tasks (``recops.training``, ``recops.compression``), never at DAG parse time.

The towers are built from the dataset's features (``TwoTowerSpec.user_features`` /
``item_features``), never from fixed column names:

- User tower: user-id embedding plus each user feature's encoding (``recops_models.
  encoders``: embeddings for categoricals, pooled embeddings for multi-valued and text
  features, standardised numerics with a missing flag) plus, when the spec has a
  ``history_length``, the history encoding (the recency-weighted mean of the embeddings
  of the user's newest seen items, ``encoders.RecencyPool``), concatenated, projected to
  ``embedding_dim`` and L2-normalised. Each training row's history is what evaluation
  under its split protocol hands the tower (``recops.splits.preceding_histories``): the
  user's seen items before the row's event (temporal), or the user's newest other items
  (random).
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

The spec and its input names live in ``recops_models.tower_spec``, the retrieval
SavedModel's module (signatures, seen-item masking, history embedding of unknown users)
in ``recops_models.retrieval_export``; this module re-exports both, so callers import
every name from here.

Layer names (pruning, clustering, folding and the tower cut rely on them): ``user_idx`` /
``item_idx`` (inputs), ``user_id_embedding`` / ``item_id_embedding``,
``<side>_attr_<feature>_index`` / ``_embedding`` / ``_pool``, ``history_idx`` (input),
``user_history_pool`` (over ``item_id_embedding``, shared with the item tower), ``user_features`` /
``item_features`` (concatenation), ``user_projection`` / ``item_projection``,
``user_embedding`` / ``item_embedding`` (outputs) and ``in_batch_logits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recops_models.contract import HISTORY_IDX, HISTORY_INPUT, HISTORY_PAD, MASKED_SCORE
from recops_models.tf_env import use_legacy_keras
from recops_models.tower_spec import (
    RESERVED_NAMES,
    TwoTowerSpec,
    feature_prefix,
    history_index,
    item_inputs,
    model_inputs,
    train_inputs,
    user_inputs,
)

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.encoders import (  # noqa: E402
    CUSTOM_LAYERS,
    RecencyPool,
    encode_indexed,
    feature_inputs,
    index_layer,
)
from recops_models.retrieval_export import (  # noqa: E402
    HISTORY_DECAY,
    HISTORY_POOL_MAX,
    RetrievalModule,
    _FloatRetrievalModule,
    embed_in_batches,
    history_weights,
    int_table,
    item_features_of,
    mask_seen,
    pool_history,
    position_table,
    serving_signature,
    tower_candidates,
)

__all__ = [
    "HISTORY_DECAY",
    "HISTORY_IDX",
    "HISTORY_INPUT",
    "HISTORY_PAD",
    "HISTORY_POOL_MAX",
    "MASKED_SCORE",
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
    "history_index",
    "history_input",
    "history_weights",
    "int_table",
    "item_features_of",
    "item_inputs",
    "load_trained_model",
    "mask_seen",
    "model_inputs",
    "pool_history",
    "position_table",
    "save_trained_model",
    "serving_signature",
    "tower_candidates",
    "towers_from_training_model",
    "train_inputs",
    "user_inputs",
]

#: Logit given to in-batch "negatives" that are really the row's own positive item.
_MASKED_LOGIT = MASKED_SCORE
_SPEC_FILE = "spec.json"
_CKPT_PREFIX = "ckpt"


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


def build_tower(
    spec: TwoTowerSpec,
    side: str,
    id_index: Any,
    indexed: Mapping[str, Any],
    item_rows: Any = None,
) -> Any:
    """One tower from its id indices and its features' index tensors.

    Args:
        spec: Vocabularies, features and sizes.
        side: ``user`` or ``item``.
        id_index: Dense id indices ``int64 [b]`` (0 = unknown).
        indexed: Each feature's index tensor (``encoders.index_layer`` outputs, or
            ``encoders.indexed_inputs`` for a model fed pre-indexed features); for the
            user side of a spec with a ``history_length``, also ``HISTORY_IDX``.
        item_rows: The item id ``Embedding`` both towers share: the item tower's id
            rows and the rows the user tower pools its history from (one table, so a
            history item and a candidate are the same vector's two uses). None builds
            it here, named ``item_id_embedding``.

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
    if item_rows is None and (side == "item" or spec.history_length):
        item_rows = item_id_embedding(spec)
    id_rows = (
        item_rows
        if side == "item"
        else keras.layers.Embedding(len(ids) + 1, dim, name="user_id_embedding")
    )
    parts = [id_rows(id_index)]
    parts += encode_indexed(features, indexed, feature_prefix(side))
    if side == "user" and spec.history_length:
        history = indexed[HISTORY_IDX]
        parts.append(RecencyPool(name="user_history_pool")([item_rows(history), history]))
    hidden = (
        keras.layers.Concatenate(name=f"{side}_features")(parts) if len(parts) > 1 else parts[0]
    )
    hidden = keras.layers.Dense(dim, name=f"{side}_projection")(hidden)
    return L2Normalize(name=f"{side}_embedding", dtype="float32")(hidden)


def item_id_embedding(spec: TwoTowerSpec) -> Any:
    """The item id ``Embedding`` (``item_id_embedding``, ``[n_items + 1, dim]``)."""
    return keras.layers.Embedding(
        len(spec.item_ids) + 1, spec.embedding_dim, name="item_id_embedding"
    )


def _raw_tower(spec: TwoTowerSpec, side: str, item_rows: Any = None) -> tuple[dict[str, Any], Any]:
    """The raw inputs of one tower and its output (index layers inside the graph)."""
    features = spec.user_features if side == "user" else spec.item_features
    id_input = keras.Input(shape=(), dtype=tf.int64, name=f"{side}_idx")
    raw = feature_inputs(features)
    prefix = feature_prefix(side)
    indexed = {f.name: index_layer(f, f"{prefix}{f.name}_index")(raw[f.name]) for f in features}
    if side == "user" and spec.history_length:
        raw[HISTORY_IDX] = indexed[HISTORY_IDX] = history_input()
    return {f"{side}_idx": id_input, **raw}, build_tower(spec, side, id_input, indexed, item_rows)


def history_input() -> Any:
    """The ``keras.Input`` of the user tower's history (``HISTORY_IDX``, ``int64 [b, L]``)."""
    return keras.Input(shape=(None,), dtype=tf.int64, name=HISTORY_IDX)


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
        item_rows = item_id_embedding(spec)
        user_in, user = _raw_tower(spec, "user", item_rows)
        item_in, item = _raw_tower(spec, "item", item_rows)
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
    if side == "user" and HISTORY_IDX in model.input_names:
        names.append(HISTORY_IDX)
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
    ``serving_default(user_id, <user features>, history_item_ids) -> item_ids int64 [b, k],
    scores`` (seen items masked to ``MASKED_SCORE``), ``user_embedding(same) ->
    embedding`` and ``item_embeddings() -> item_ids, embeddings``. Unknown user ids,
    unknown categories and missing numerics are valid inputs (out-of-vocabulary rows,
    the missing flag).

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
