"""Two-tower retrieval model in tf_keras (Functional), with its loss and SavedModel export.

Importing this module imports TensorFlow. It is model code, referenced only from inside
pipeline tasks (``recops.training``, ``recops.compression``), never at DAG parse time.

- User tower: user-id embedding, gender and occupation embeddings and standardised age,
  projected to ``embedding_dim`` and L2-normalised.
- Item tower: item-id embedding, genre multi-hot (decoded from ``genre_mask``) and the
  standardised release year with an "unknown year" flag, projected and L2-normalised.
- Training model: one Functional graph holding both towers; its output is the in-batch
  logit matrix ``user @ item.T / temperature``. Under a distribution strategy each
  replica all-gathers the item side of the global batch, so its users are scored against
  every item of the global batch, not only its own slice: the loss is then the same for
  1 or N replicas (up to float rounding), and the number of negatives does not depend on
  the device count. The loss labels row ``i`` of replica ``r`` with column
  ``r * local_batch + i``.
- Mixed precision (``mixed_float16``, GPU only) keeps the L2-normalised tower outputs,
  the logits and the loss in float32.
- Ids reach the Keras graph as dense indices (0 = out of vocabulary). The exported
  SavedModel carries the raw-id vocabularies as hash tables, so serving takes raw ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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

__all__ = [
    "ITEM_INPUTS",
    "N_GENRES",
    "TRAIN_INPUTS",
    "USER_INPUTS",
    "InBatchSoftmaxLoss",
    "TwoTowerSpec",
    "build_training_model",
    "candidate_embeddings",
    "export_retrieval_model",
    "load_trained_model",
    "model_inputs",
    "save_trained_model",
    "towers_from_training_model",
]

N_GENRES = 19
USER_INPUTS = ("user_idx", "gender_idx", "occupation_idx", "age")
ITEM_INPUTS = ("item_idx", "genre_mask", "release_year")
#: Log sampling probability of each example's item, for the logQ correction.
TRAIN_INPUTS = (*USER_INPUTS, *ITEM_INPUTS, "item_logq")
_GENDER_DIM = 4
_OCCUPATION_DIM = 8
#: Logit given to in-batch "negatives" that are really the row's own positive item.
_MASKED_LOGIT = -1e9
_SPEC_FILE = "spec.json"
_CKPT_PREFIX = "ckpt"


@dataclass(frozen=True, kw_only=True)
class TwoTowerSpec:
    """Everything needed to rebuild the model graph: vocabularies, feature stats, sizes.

    Vocabularies are sorted and hold only values seen in training; index 0 is the
    out-of-vocabulary bucket.
    """

    user_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    genders: tuple[str, ...]
    occupations: tuple[str, ...]
    age_mean: float
    age_std: float
    year_mean: float
    year_std: float
    embedding_dim: int = 32
    temperature: float = 0.05

    @classmethod
    def from_columns(
        cls,
        *,
        user_id: np.ndarray,
        item_id: np.ndarray,
        gender: np.ndarray,
        occupation: np.ndarray,
        age: np.ndarray,
        release_year: np.ndarray,
        embedding_dim: int,
        temperature: float,
    ) -> TwoTowerSpec:
        """Fit vocabularies and standardisation stats on training columns.

        Args:
            user_id: Raw user ids of the training examples.
            item_id: Raw item ids of the training examples.
            gender: Gender strings of the training examples.
            occupation: Occupation strings of the training examples.
            age: Ages of the training examples.
            release_year: Release years of the training examples (0 = unknown).
            embedding_dim: Output size of both towers.
            temperature: Softmax temperature of the in-batch logits.

        Returns:
            The spec.
        """
        years = np.asarray(release_year, dtype=np.float64)
        known = years[years > 0]
        ages = np.asarray(age, dtype=np.float64)
        return cls(
            user_ids=tuple(int(v) for v in sorted_vocab(user_id)),
            item_ids=tuple(int(v) for v in sorted_vocab(item_id)),
            genders=tuple(str(v) for v in sorted_vocab(np.asarray(gender, dtype=str))),
            occupations=tuple(str(v) for v in sorted_vocab(np.asarray(occupation, dtype=str))),
            age_mean=float(ages.mean()) if ages.size else 0.0,
            age_std=float(ages.std()) if ages.size and ages.std() > 0 else 1.0,
            year_mean=float(known.mean()) if known.size else 0.0,
            year_std=float(known.std()) if known.size and known.std() > 0 else 1.0,
            embedding_dim=embedding_dim,
            temperature=temperature,
        )

    def to_json(self) -> str:
        """Serialise the spec."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TwoTowerSpec:
        """Rebuild a spec written by ``to_json``."""
        raw = json.loads(text)
        for key in ("user_ids", "item_ids", "genders", "occupations"):
            raw[key] = tuple(raw[key])
        return cls(**raw)

    def user_index(self, user_id: np.ndarray) -> np.ndarray:
        """Dense indices of raw user ids (0 = unknown)."""
        return lookup_index(
            np.asarray(self.user_ids, dtype=np.int64), np.asarray(user_id, np.int64)
        )

    def item_index(self, item_id: np.ndarray) -> np.ndarray:
        """Dense indices of raw item ids (0 = unknown)."""
        return lookup_index(
            np.asarray(self.item_ids, dtype=np.int64), np.asarray(item_id, np.int64)
        )

    def gender_index(self, gender: np.ndarray) -> np.ndarray:
        """Dense indices of gender strings (0 = unknown)."""
        return lookup_index(np.asarray(self.genders, dtype=str), np.asarray(gender, dtype=str))

    def occupation_index(self, occupation: np.ndarray) -> np.ndarray:
        """Dense indices of occupation strings (0 = unknown)."""
        return lookup_index(
            np.asarray(self.occupations, dtype=str), np.asarray(occupation, dtype=str)
        )


def model_inputs(
    spec: TwoTowerSpec, columns: Mapping[str, np.ndarray], item_logq: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Turn raw training columns into the training model's named inputs.

    Args:
        spec: The model spec (vocabularies).
        columns: Arrays ``user_id, item_id, age, gender, occupation, release_year,
            genre_mask`` of equal length.
        item_logq: Log sampling probability of each row's item; zeros (no logQ
            correction) when None.

    Returns:
        Arrays keyed by ``TRAIN_INPUTS``.
    """
    n = len(columns["user_id"])
    logq = np.zeros(n, np.float32) if item_logq is None else np.asarray(item_logq, np.float32)
    return {
        "user_idx": spec.user_index(columns["user_id"]),
        "gender_idx": spec.gender_index(columns["gender"]),
        "occupation_idx": spec.occupation_index(columns["occupation"]),
        "age": np.asarray(columns["age"], dtype=np.int64),
        "item_idx": spec.item_index(columns["item_id"]),
        "genre_mask": np.asarray(columns["genre_mask"], dtype=np.int64),
        "release_year": np.asarray(columns["release_year"], dtype=np.int64),
        "item_logq": logq,
    }


class Standardize(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """``(x - mean) / std`` as a float column ``[batch, 1]``; stats are fixed config."""

    def __init__(self, mean: float, std: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.expand_dims((tf.cast(inputs, tf.float32) - self.mean) / self.std, -1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


class ReleaseYear(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """Standardised year plus an unknown flag, ``[batch, 2]``; year 0 means unknown."""

    def __init__(self, mean: float, std: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        year = tf.cast(inputs, tf.float32)
        known = tf.cast(inputs > 0, tf.float32)
        # Unknown years sit at the mean so they do not pull the projection.
        scaled = known * (year - self.mean) / self.std
        return tf.stack([scaled, 1.0 - known], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


class GenreMultiHot(keras.layers.Layer):  # type: ignore[misc]  # untyped base
    """Decode an int64 genre bitmask into a float multi-hot ``[batch, n_genres]``."""

    def __init__(self, n_genres: int = N_GENRES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_genres = int(n_genres)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        bits = tf.bitwise.left_shift(
            tf.ones([self.n_genres], tf.int64), tf.range(self.n_genres, dtype=tf.int64)
        )
        mask = tf.bitwise.bitwise_and(tf.expand_dims(tf.cast(inputs, tf.int64), -1), bits)
        return tf.cast(tf.not_equal(mask, 0), tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_genres": self.n_genres}


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


def build_training_model(
    spec: TwoTowerSpec, *, mixed_precision: bool = False, cross_replica: bool = True
) -> keras.Model:
    """Build the Functional training model (both towers plus in-batch logits).

    Call it inside ``strategy.scope()`` when training under a distribution strategy.

    Args:
        spec: Vocabularies, feature stats and sizes.
        mixed_precision: Build under the ``mixed_float16`` policy (float16 compute,
            float32 variables, tower outputs and logits in float32); ``compile`` then
            wraps the optimizer in a loss-scale optimizer. The weights are the same
            variables either way, so checkpoints load into a float32 model.
        cross_replica: Score each replica's users against the items of the whole global
            batch (see the module docstring); False keeps the replica's own slice.

    Returns:
        A model taking a dict keyed by ``TRAIN_INPUTS`` and returning float32 logits
        ``[batch, global batch]``. Layer names ``user_embedding`` and ``item_embedding``
        mark the tower outputs (see ``towers_from_training_model``).
    """
    previous = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        return _build_training_model(spec, cross_replica=cross_replica)
    finally:
        # The policy is process-global; export and compression build float32 models.
        keras.mixed_precision.set_global_policy(previous)


def _build_training_model(spec: TwoTowerSpec, *, cross_replica: bool) -> keras.Model:
    dim = spec.embedding_dim
    ints = {
        name: keras.Input(shape=(), dtype=tf.int64, name=name)
        for name in (*USER_INPUTS, *ITEM_INPUTS)
    }
    item_logq = keras.Input(shape=(), dtype=tf.float32, name="item_logq")

    user = keras.layers.Concatenate(name="user_features")(
        [
            keras.layers.Embedding(len(spec.user_ids) + 1, dim, name="user_id_embedding")(
                ints["user_idx"]
            ),
            keras.layers.Embedding(len(spec.genders) + 1, _GENDER_DIM, name="gender_embedding")(
                ints["gender_idx"]
            ),
            keras.layers.Embedding(
                len(spec.occupations) + 1, _OCCUPATION_DIM, name="occupation_embedding"
            )(ints["occupation_idx"]),
            Standardize(spec.age_mean, spec.age_std, name="age_standardized")(ints["age"]),
        ]
    )
    user = keras.layers.Dense(dim, name="user_projection")(user)
    user = L2Normalize(name="user_embedding", dtype="float32")(user)

    item = keras.layers.Concatenate(name="item_features")(
        [
            keras.layers.Embedding(len(spec.item_ids) + 1, dim, name="item_id_embedding")(
                ints["item_idx"]
            ),
            GenreMultiHot(N_GENRES, name="genres")(ints["genre_mask"]),
            ReleaseYear(spec.year_mean, spec.year_std, name="year")(ints["release_year"]),
        ]
    )
    item = keras.layers.Dense(dim, name="item_projection")(item)
    item = L2Normalize(name="item_embedding", dtype="float32")(item)

    logits = InBatchLogits(
        spec.temperature, cross_replica=cross_replica, name="in_batch_logits", dtype="float32"
    )([user, item, ints["item_idx"], item_logq])
    return keras.Model(inputs={**ints, "item_logq": item_logq}, outputs=logits, name="two_tower")


def towers_from_training_model(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Cut the user and item towers out of a (possibly cloned) training model.

    Args:
        model: A model from ``build_training_model`` or a clone of it with the original
            layer names (for example after ``strip_pruning``).

    Returns:
        ``(user_tower, item_tower)``, sharing the training model's layers and weights.
    """
    user_tower = keras.Model(
        inputs={name: model.get_layer(name).output for name in USER_INPUTS},
        outputs=model.get_layer("user_embedding").output,
        name="user_tower",
    )
    item_tower = keras.Model(
        inputs={name: model.get_layer(name).output for name in ITEM_INPUTS},
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


def string_table(keys: tuple[str, ...]) -> tf.lookup.StaticHashTable:
    """Raw string -> 1-based index (0 = out of vocabulary), as exported lookups use."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keys) or [""], tf.string),
            tf.range(1, max(len(keys), 1) + 1, dtype=tf.int64),
        ),
        default_value=OOV_INDEX,
    )


def int_table(keys: tuple[int, ...]) -> tf.lookup.StaticHashTable:
    """Raw int id -> 1-based index (0 = out of vocabulary), as exported lookups use."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keys) or [-1], tf.int64),
            tf.range(1, max(len(keys), 1) + 1, dtype=tf.int64),
        ),
        default_value=OOV_INDEX,
    )


USER_SIGNATURE = (
    tf.TensorSpec([None], tf.int64, name="user_id"),
    tf.TensorSpec([None], tf.int64, name="age"),
    tf.TensorSpec([None], tf.string, name="gender"),
    tf.TensorSpec([None], tf.string, name="occupation"),
)


class _RetrievalModule(tf.Module):  # type: ignore[misc]  # untyped base
    """Raw-id lookups, the user tower and fixed candidate embeddings, as one module."""

    def __init__(
        self,
        spec: TwoTowerSpec,
        user_tower: keras.Model,
        candidate_ids: np.ndarray,
        candidate_embeddings: np.ndarray,
        k: int,
    ) -> None:
        super().__init__(name="recops_retrieval")
        self.user_tower = user_tower
        self.user_table = int_table(spec.user_ids)
        self.gender_table = string_table(spec.genders)
        self.occupation_table = string_table(spec.occupations)
        # Variables, not constants: constants would be copied into every function graph.
        self.candidate_ids = tf.Variable(candidate_ids, trainable=False, name="candidate_ids")
        self.candidate_embeddings = tf.Variable(
            candidate_embeddings, trainable=False, name="candidate_embeddings"
        )
        self.k = k

    def _embed(
        self, user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor, occupation: tf.Tensor
    ) -> tf.Tensor:
        features = {
            "user_idx": self.user_table.lookup(user_id),
            "gender_idx": self.gender_table.lookup(gender),
            "occupation_idx": self.occupation_table.lookup(occupation),
            "age": age,
        }
        return self.user_tower(features, training=False)

    @tf.function(input_signature=USER_SIGNATURE)  # type: ignore[untyped-decorator]
    def serve(
        self, user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor, occupation: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        user = self._embed(user_id, age, gender, occupation)
        scores = tf.matmul(user, self.candidate_embeddings, transpose_b=True)
        top = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.candidate_ids, top.indices), "scores": top.values}

    @tf.function(input_signature=USER_SIGNATURE)  # type: ignore[untyped-decorator]
    def user_embedding(
        self, user_id: tf.Tensor, age: tf.Tensor, gender: tf.Tensor, occupation: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return {"embedding": self._embed(user_id, age, gender, occupation)}

    @tf.function(input_signature=[])  # type: ignore[untyped-decorator]
    def item_embeddings(self) -> dict[str, tf.Tensor]:
        return {
            "item_ids": tf.identity(self.candidate_ids),
            "embeddings": tf.identity(self.candidate_embeddings),
        }


def candidate_embeddings(
    model: keras.Model, spec: TwoTowerSpec, items: Mapping[str, np.ndarray], batch_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the catalogue with the model's item tower.

    Args:
        model: A training model (plain) built from ``spec``.
        spec: Its spec.
        items: Catalogue arrays ``item_id, genre_mask, release_year``.
        batch_size: Items per call.

    Returns:
        ``(item_ids int64 [n], embeddings float32 [n, dim])``.

    Raises:
        ValueError: If the catalogue is empty or has duplicate ids.
    """
    item_ids = np.asarray(items["item_id"], dtype=np.int64)
    if item_ids.size == 0:
        raise ValueError("items catalogue is empty; nothing to retrieve")
    if np.unique(item_ids).size != item_ids.size:
        raise ValueError("items catalogue has duplicate item_id values")
    _, item_tower = towers_from_training_model(model)
    features = {
        "item_idx": spec.item_index(item_ids),
        "genre_mask": np.asarray(items["genre_mask"], dtype=np.int64),
        "release_year": np.asarray(items["release_year"], dtype=np.int64),
    }
    chunks = [
        item_tower({k: v[s : s + batch_size] for k, v in features.items()}, training=False).numpy()
        for s in range(0, item_ids.size, batch_size)
    ]
    return item_ids, np.concatenate(chunks).astype(np.float32)


def export_retrieval_model(
    *,
    model: keras.Model,
    spec: TwoTowerSpec,
    items: Mapping[str, np.ndarray],
    export_dir: Path,
    k: int,
    batch_size: int = 8192,
) -> int:
    """Export the retrieval SavedModel, candidate embeddings precomputed by the item tower.

    Signatures: ``serving_default``, ``user_embedding`` and ``item_embeddings``.

    Args:
        model: A trained training model (plain, not distributed, not pruning-wrapped).
        spec: Its spec.
        items: Catalogue arrays ``item_id, genre_mask, release_year`` (one row per item).
        export_dir: Folder to write; must not exist yet.
        k: Candidates returned by ``serving_default``; capped at the catalogue size.
        batch_size: Items embedded per call.

    Returns:
        The ``k`` actually used.

    Raises:
        ValueError: If the catalogue is empty or has duplicate ids.
    """
    item_ids, embeddings = candidate_embeddings(model, spec, items, batch_size)
    user_tower, _ = towers_from_training_model(model)
    k = min(k, int(item_ids.size))
    module = _RetrievalModule(spec, user_tower, item_ids, embeddings, k)
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
