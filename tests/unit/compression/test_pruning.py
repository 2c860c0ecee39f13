"""Pruning a tiny trained model: sparsity, contract, size, idempotence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _tiny_data import TinyData
from recops.compression import CompressConfig, CompressResult, compress
from recops.config import RETRIEVAL_K
from recops.training import TrainResult
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

DIM = 16


def _config(data: TinyData, trained: TrainResult, output_dir: Path) -> CompressConfig:
    return CompressConfig(
        train_dir=str(Path(trained.model_dir).parent),
        training_set_uri=data.training_set_uri,
        split_uri=trained.split_uri,
        users_uri=data.users_uri,
        items_uri=data.items_uri,
        output_dir=str(output_dir),
        target_sparsity=0.5,
        fine_tune_epochs=2,
        batch_size=128,
    )


@pytest.fixture(scope="module")
def compressed(
    data: TinyData, trained: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> CompressResult:
    return compress(_config(data, trained, tmp_path_factory.mktemp("run") / "compress"))


def test_sparsity_reaches_target(compressed: CompressResult) -> None:
    assert compressed.sparsity == pytest.approx(0.5, abs=0.03)
    assert 0 < compressed.nonzero_params < compressed.params


def test_pruned_export_obeys_the_contract(compressed: CompressResult, data: TinyData) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(compressed.model_dir)
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


def test_pruned_artifact_compresses_better(compressed: CompressResult) -> None:
    assert 0 < compressed.gzip_bytes < compressed.float_gzip_bytes
    assert compressed.gzip_bytes < compressed.saved_model_bytes


def test_second_call_returns_stored_result(
    compressed: CompressResult, data: TinyData, trained: TrainResult
) -> None:
    again = compress(_config(data, trained, Path(compressed.model_dir).parent))
    assert again == compressed


def test_incomplete_train_dir_is_rejected(
    data: TinyData, trained: TrainResult, tmp_path: Path
) -> None:
    config = _config(data, trained, tmp_path / "compress")
    bad = CompressConfig(**{**config.to_dict(), "train_dir": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        compress(bad)
