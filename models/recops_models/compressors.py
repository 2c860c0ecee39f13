"""Model-side compression of the two-tower: TF-MOT pruning, clustering, QAT, distillation.

Each function takes a trained (plain) training model and returns a plain model with the
original layer names, ready for ``export_retrieval_model`` or the quantized export; QAT
returns a fake-quant user tower (fed indexed inputs, as ``recops_models.edge`` converts)
for TFLite conversion instead.

Pruning and clustering wrap every ``Dense`` and ``Embedding`` layer: the id tables, the
feature tables and the projections. The feature index layers carry no weights and are
left as they are.

Importing this module imports TensorFlow and TF-MOT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from recops_models.tf_env import use_legacy_keras

# tf_keras must be selected before TensorFlow's first import (see ``tf_env``).
use_legacy_keras()

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from recops_models.edge import edge_user_tower  # noqa: E402
from recops_models.encoders import feature_inputs, index_layer  # noqa: E402
from recops_models.two_tower import (  # noqa: E402
    HISTORY_IDX,
    InBatchLogits,
    InBatchSoftmaxLoss,
    TwoTowerSpec,
    build_training_model,
    custom_objects,
    feature_prefix,
    history_input,
    towers_from_training_model,
)

__all__ = [
    "cluster_model",
    "copy_into_plain",
    "distill_student",
    "pruning_schedule",
    "qat_user_tower",
]


def copy_into_plain(source: keras.Model, spec: TwoTowerSpec) -> keras.Model:
    """Copy weights by layer name into a fresh plain model (no wrappers, no mirroring).

    Args:
        source: A model holding the training model's layer names (e.g. a stripped clone).
        spec: The spec to build the plain model from.

    Returns:
        The plain training model with ``source``'s weights.
    """
    plain = build_training_model(spec)
    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return plain


def pruning_schedule(total_steps: int, target: float) -> Any:
    """PolynomialDecay from 0 that reaches ``target`` at ~70% of the steps.

    The last pruning step lands on a multiple of the frequency, so the target is really
    hit, and the remaining steps let the survivors recover.

    Args:
        total_steps: Fine-tune steps in all.
        target: Final sparsity (fraction of zero weights).

    Returns:
        The TF-MOT pruning schedule.

    Raises:
        ValueError: With fewer than two steps.
    """
    if total_steps < 2:
        raise ValueError(
            f"only {total_steps} fine-tune step(s): raise fine_tune_epochs or lower batch_size"
        )
    end = max(1, int(0.7 * total_steps))
    frequency = max(1, end // 10)
    end = frequency * (end // frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=end, frequency=frequency
    )


def _fine_tune(
    model: keras.Model, dataset: Any, epochs: int, lr: float, callbacks: list[Any]
) -> float:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=InBatchSoftmaxLoss())
    history = model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=0)
    return float(history.history["loss"][-1])


def cluster_model(
    model: keras.Model,
    spec: TwoTowerSpec,
    dataset: Any,
    *,
    clusters: int,
    epochs: int,
    learning_rate: float,
) -> tuple[keras.Model, float]:
    """Weight-cluster Dense and Embedding layers, fine-tune, strip.

    Linear centroid initialisation: k-means++ fails on tensors with fewer values than
    clusters (a two-valued categorical's table has a dozen).

    Args:
        model: The trained plain training model.
        spec: Its spec.
        dataset: Batches of ``(model_inputs features, dummy labels)``.
        clusters: Centroids per clustered weight.
        epochs: Fine-tune epochs.
        learning_rate: Adam learning rate.

    Returns:
        ``(plain clustered model, final loss)``.
    """
    cluster = tfmot.clustering.keras

    def wrap(layer: Any) -> Any:
        if isinstance(layer, keras.layers.Dense | keras.layers.Embedding):
            return cluster.cluster_weights(
                layer,
                number_of_clusters=clusters,
                cluster_centroids_init=cluster.CentroidInitialization.LINEAR,
            )
        return layer

    # TF-MOT wraps the layer instances it is given and rewires their weights: wrap a
    # copy, so the caller's model stays usable.
    source = copy_into_plain(model, spec)
    with keras.utils.custom_object_scope(custom_objects()):
        wrapped = keras.models.clone_model(source, clone_function=wrap)
    loss = _fine_tune(wrapped, dataset, epochs, learning_rate, [])
    return copy_into_plain(cluster.strip_clustering(wrapped), spec), loss


def qat_user_tower(
    model: keras.Model,
    spec: TwoTowerSpec,
    dataset: Any,
    *,
    epochs: int,
    learning_rate: float,
) -> tuple[keras.Model, keras.Model, float]:
    """Quantization-aware fine-tuning of the user tower's dense layers.

    ``quantize_apply`` on the whole training model breaks the tower cut (its rebuilt
    graph no longer connects the input layers by name), so the user tower is quantized
    on its own, in the indexed form TFLite converts (``edge.edge_user_tower``), and
    trained inside a fresh graph: raw inputs, the (weightless) index layers, the
    quantized user tower, and the float item tower. Default QAT leaves Embedding layers
    float, as TF-MOT documents.

    Args:
        model: The trained plain training model.
        spec: Its spec (the features, the logits' temperature).
        dataset: Batches of ``(model_inputs features, dummy labels)``.
        epochs: Fine-tune epochs.
        learning_rate: Adam learning rate.

    Returns:
        ``(fake-quant user tower fed indexed inputs (``edge.edge_inputs``), float item
        tower fed raw inputs (``two_tower.tower_candidates``), final loss)``.
    """
    _, item_tower = towers_from_training_model(model)

    def annotate(layer: Any) -> Any:
        if isinstance(layer, keras.layers.Dense):
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return layer

    annotated = keras.models.clone_model(edge_user_tower(model, spec), clone_function=annotate)
    with tfmot.quantization.keras.quantize_scope(custom_objects()):
        quantized = tfmot.quantization.keras.quantize_apply(annotated)
    user_idx = keras.Input(shape=(), dtype=tf.int64, name="user_idx")
    item_idx = keras.Input(shape=(), dtype=tf.int64, name="item_idx")
    user_raw = feature_inputs(spec.user_features)
    item_raw = feature_inputs(spec.item_features)
    item_logq = keras.Input(shape=(), dtype=tf.float32, name="item_logq")
    prefix = feature_prefix("user")
    user_indexed = {
        f.name: index_layer(f, f"{prefix}{f.name}_index")(user_raw[f.name])
        for f in spec.user_features
    }
    if spec.history_length:
        # Already indices: the same tensor is the trainer's input and the tower's.
        user_raw[HISTORY_IDX] = user_indexed[HISTORY_IDX] = history_input()
    logits = InBatchLogits(spec.temperature, name="in_batch_logits")(
        [
            quantized({"user_idx": user_idx, **user_indexed}),
            item_tower({"item_idx": item_idx, **item_raw}),
            item_idx,
            item_logq,
        ]
    )
    trainer = keras.Model(
        inputs={"user_idx": user_idx, **user_raw, "item_idx": item_idx, **item_raw,
                "item_logq": item_logq},
        outputs=logits,
    )  # fmt: skip
    loss = _fine_tune(trainer, dataset, epochs, learning_rate, [])
    return quantized, item_tower, loss


def distill_student(
    teacher: keras.Model,
    spec: TwoTowerSpec,
    dataset: Any,
    *,
    embedding_dim: int,
    epochs: int,
    learning_rate: float,
    alpha: float,
    temperature: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[keras.Model, TwoTowerSpec, float]:
    """Train a smaller two-tower on the teacher's in-batch scores.

    Loss per batch: ``alpha · CE(true in-batch labels, student) + (1 - alpha) · T² ·
    CE(softmax(teacher / T), softmax(student / T))`` over the same in-batch logit matrix
    (logQ correction and accidental-positive masking included, as the teacher saw them).
    Cross-entropy against soft targets equals KL up to the teacher's entropy, a constant.

    Args:
        teacher: The trained plain training model.
        spec: Its spec; the student keeps the vocabularies and features.
        dataset: Batches of ``(model_inputs features, dummy labels)``.
        embedding_dim: Student tower output size (the id tables shrink with it).
        epochs: Passes over the dataset.
        learning_rate: Adam learning rate.
        alpha: Weight of the true-label loss.
        temperature: Distillation temperature.
        seed: Weight-initialisation seed.
        on_epoch: Called with ``(epoch, mean loss)`` after each epoch.

    Returns:
        ``(student, student spec, final epoch loss)``.
    """
    keras.utils.set_random_seed(seed)
    student_spec = dataclasses.replace(spec, embedding_dim=embedding_dim)
    student = build_training_model(student_spec)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    t = float(temperature)

    @tf.function  # type: ignore[untyped-decorator]
    def step(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        soft = tf.nn.softmax(teacher(features, training=False) / t, axis=-1)
        with tf.GradientTape() as tape:
            logits = student(features, training=True)
            labels = tf.range(tf.shape(logits)[0])
            hard = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
            distill = tf.reduce_mean(
                -tf.reduce_sum(soft * tf.nn.log_softmax(logits / t, axis=-1), axis=-1)
            )
            loss = alpha * hard + (1.0 - alpha) * t * t * distill
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    final = float("nan")
    for epoch in range(epochs):
        losses = [float(step(features)) for features, _ in dataset]
        final = float(np.mean(losses))
        if on_epoch is not None:
            on_epoch(epoch, final)
    return student, student_spec, final
