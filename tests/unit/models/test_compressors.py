"""Pruning, clustering, QAT and distillation over the spec-driven towers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _tiny_tower import Tiny, train_tiny
from recops_models.tf_env import tensorflow

tf = tensorflow()

import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from recops_models.compressors import (  # noqa: E402
    cluster_model,
    copy_into_plain,
    distill_student,
    pruning_schedule,
    qat_user_tower,
)
from recops_models.edge import TFLiteScorer, convert_retrieval_tflite, edge_inputs  # noqa: E402
from recops_models.two_tower import (  # noqa: E402
    InBatchSoftmaxLoss,
    export_retrieval_model,
    model_inputs,
    tower_candidates,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A two-tower trained a few epochs on the tiny data."""
    return train_tiny(tmp_path_factory.mktemp("tiny"))


def test_pruning_reaches_the_target_and_copies_into_a_plain_model(
    tiny: Tiny, tmp_path: Path
) -> None:
    dataset = tiny.dataset()
    steps = sum(1 for _ in dataset) * 2
    schedule = pruning_schedule(steps, 0.5)

    def prune(layer: Any) -> Any:
        if isinstance(layer, keras.layers.Dense | keras.layers.Embedding):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    # TF-MOT wraps the given layer instances: prune a copy, not the shared model.
    source = copy_into_plain(tiny.model, tiny.spec)
    pruned = keras.models.clone_model(source, clone_function=prune)
    pruned.compile(optimizer=keras.optimizers.Adam(0.001), loss=InBatchSoftmaxLoss())
    pruned.fit(dataset, epochs=2, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=0)
    plain = copy_into_plain(tfmot.sparsity.keras.strip_pruning(pruned), tiny.spec)
    for name in ("user_projection", "user_attr_occupation_embedding", "item_attr_title_embedding"):
        kernel = plain.get_layer(name).get_weights()[0]
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.05), name
    export_retrieval_model(
        model=plain, spec=tiny.spec, items=tiny.catalogue, export_dir=tmp_path / "m", k=10
    )
    assert (tmp_path / "m" / "saved_model.pb").is_file()
    with pytest.raises(ValueError, match="fine-tune step"):
        pruning_schedule(1, 0.5)


def test_clustering_leaves_at_most_the_centroids_per_weight(tiny: Tiny) -> None:
    clustered, loss = cluster_model(
        tiny.model, tiny.spec, tiny.dataset(), clusters=8, epochs=1, learning_rate=0.001
    )
    assert np.isfinite(loss)
    for name in ("user_projection", "item_attr_genres_embedding", "item_id_embedding"):
        assert np.unique(clustered.get_layer(name).get_weights()[0]).size <= 8, name
    batch = model_inputs(tiny.spec, {c: tiny.rows[c].to_numpy()[:8] for c in tiny.rows})
    assert clustered(batch).shape == (8, 8)


def test_qat_tower_takes_edge_inputs_and_converts(tiny: Tiny) -> None:
    quantized, item_tower, loss = qat_user_tower(
        tiny.model, tiny.spec, tiny.dataset(), epochs=1, learning_rate=0.001
    )
    assert np.isfinite(loss)
    users = tiny.users.drop(columns="event_timestamp")
    inputs = edge_inputs(tiny.spec, users)
    assert quantized(inputs, training=False).shape == (len(users), tiny.spec.embedding_dim)
    item_ids, vectors = tower_candidates(item_tower, tiny.spec, tiny.catalogue)
    blob = convert_retrieval_tflite(
        user_tower=quantized,
        candidate_ids=item_ids,
        candidates=vectors,
        k=10,
        mode="qat",
        representative=inputs,
    )
    out = TFLiteScorer(blob)(inputs)
    assert out["item_ids"].shape == (len(users), 10)
    assert np.isfinite(out["scores"]).all()


def test_distilled_student_is_smaller_and_exports(tiny: Tiny, tmp_path: Path) -> None:
    losses: list[float] = []
    student, spec, loss = distill_student(
        tiny.model,
        tiny.spec,
        tiny.dataset(),
        embedding_dim=8,
        epochs=2,
        learning_rate=0.01,
        alpha=0.5,
        temperature=2.0,
        seed=0,
        on_epoch=lambda epoch, value: losses.append(value),
    )
    assert spec.embedding_dim == 8 and spec.user_features == tiny.spec.user_features
    assert len(losses) == 2 and losses[-1] == loss and np.isfinite(loss)
    assert student.count_params() < tiny.model.count_params()
    export_retrieval_model(
        model=student, spec=spec, items=tiny.catalogue, export_dir=tmp_path / "m", k=10
    )
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    embedding = loaded.signatures["item_embeddings"]()["embeddings"]
    assert embedding.shape == (len(tiny.items), 8)
