"""Pruning: ``prune_model`` reaches its target sparsity; the ``prune_80`` variant built on
it keeps the serving contract and compresses better than the float model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _compression_setup import profiles, serve
from _tiny_data import TinyData
from recops.compression import VariantResult, gzip_bytes
from recops.compression.pruning import prune_model
from recops.config import RETRIEVAL_K
from recops.dataset_spec import load_spec
from recops.layout import layout_from_spec
from recops.splits import train_rows
from recops.tables import read_parquet_columns, read_training_set
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

DIM = 16


@pytest.fixture(scope="module")
def pruned(variants: dict[str, VariantResult]) -> VariantResult:
    result = variants["prune_80"]
    assert result.status == "ok", result.reason
    return result


def _kernel_sparsity(model: Any) -> float:
    """Fraction of zeros in the Dense kernels and Embedding tables (what TF-MOT prunes)."""
    import tf_keras

    zeros, total = 0, 0
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.Dense | tf_keras.layers.Embedding):
            kernel = layer.weights[0].numpy()
            zeros += int(np.count_nonzero(kernel == 0))
            total += kernel.size
    return zeros / total


def test_sparsity_reaches_target(data: TinyData, trained: TrainResult) -> None:
    split = read_parquet_columns(trained.split_uri, ("user_id", "item_id", "split"), "split")
    layout = layout_from_spec(load_spec(data.spec_uri))
    plain, _, loss, _, _ = prune_model(
        weights_dir=Path(trained.model_dir).parent / "weights",
        rows=train_rows(read_training_set(data.training_set_uri, layout), split),
        logq=None,
        target_sparsity=0.5,
        epochs=2,
        batch_size=128,
        learning_rate=0.005,
        replicas=2,
        seed=42,
    )
    assert _kernel_sparsity(plain) == pytest.approx(0.5, abs=0.03)
    assert np.isfinite(loss)


def test_variant_records_its_stored_sparsity(pruned: VariantResult) -> None:
    # The variant counts every stored weight (the precomputed catalogue table too).
    assert 0 < pruned.sparsity < 1
    assert 0 < pruned.nonzero_params < pruned.params


def test_pruned_export_obeys_the_contract(pruned: VariantResult, data: TinyData) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(pruned.model_dir)
    assert set(model.signatures) == {"serving_default", "user_embedding", "item_embeddings"}
    out = serve(pruned.model_dir, profiles(data.users_uri, [1, 5]))
    assert out["item_ids"].dtype == np.int64 and out["item_ids"].shape == (2, RETRIEVAL_K)
    assert out["scores"].dtype == np.float32 and out["scores"].shape == (2, RETRIEVAL_K)
    catalogue = model.signatures["item_embeddings"]()
    assert catalogue["embeddings"].shape == (data.n_items, DIM)
    assert np.isfinite(catalogue["embeddings"].numpy()).all()


def test_pruned_artifact_compresses_better(pruned: VariantResult, trained: TrainResult) -> None:
    assert 0 < pruned.gzip_bytes < gzip_bytes(Path(trained.model_dir))
    assert pruned.gzip_bytes < pruned.saved_model_bytes
