"""Pruning (``prune_model``) through the ``prune_80`` variant: sparsity, contract, size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _tiny_data import TinyData
from recops.compression import VariantResult, gzip_bytes
from recops.config import RETRIEVAL_K
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

DIM = 16


@pytest.fixture(scope="module")
def pruned(variants: dict[str, VariantResult]) -> VariantResult:
    result = variants["prune_80"]
    assert result.status == "ok", result.reason
    return result


def test_sparsity_reaches_target(pruned: VariantResult) -> None:
    assert pruned.sparsity == pytest.approx(0.8, abs=0.03)
    assert 0 < pruned.nonzero_params < pruned.params


def test_pruned_export_obeys_the_contract(pruned: VariantResult, data: TinyData) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(pruned.model_dir)
    assert set(model.signatures) == {"serving_default", "user_embedding", "item_embeddings"}
    out = model.signatures["serving_default"](
        user_id=tf.constant([1, 5], tf.int64),
        age=tf.constant([30, 40], tf.int64),
        gender=tf.constant(["M", "F"]),
        occupation=tf.constant(["engineer", "doctor"]),
    )
    assert out["item_ids"].dtype == tf.int64 and out["item_ids"].shape == (2, RETRIEVAL_K)
    assert out["scores"].dtype == tf.float32 and out["scores"].shape == (2, RETRIEVAL_K)
    catalogue = model.signatures["item_embeddings"]()
    assert catalogue["embeddings"].shape == (data.n_items, DIM)
    assert np.isfinite(catalogue["embeddings"].numpy()).all()


def test_pruned_artifact_compresses_better(pruned: VariantResult, trained: TrainResult) -> None:
    assert 0 < pruned.gzip_bytes < gzip_bytes(Path(trained.model_dir))
    assert pruned.gzip_bytes < pruned.saved_model_bytes
