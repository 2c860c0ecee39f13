"""Evaluation through the SavedModel signatures: hand-checked masking, and a trained model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import write_tiny_data
from recops.evaluation import EvalConfig, evaluate
from recops.training import TrainConfig, train

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _write_fixed_model(path: Path) -> None:
    """A SavedModel with the contract's signatures and known 1-D embeddings.

    Item scores for user 1 fall with the item id (10 best); user 2 sees the reverse.
    """
    import tensorflow as tf

    user_spec = (
        tf.TensorSpec([None], tf.int64, name="user_id"),
        tf.TensorSpec([None], tf.int64, name="age"),
        tf.TensorSpec([None], tf.string, name="gender"),
        tf.TensorSpec([None], tf.string, name="occupation"),
    )

    class Fixed(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable([[1.0], [-1.0]])
            self.item_ids = tf.Variable(np.array([10, 20, 30, 40, 50], np.int64))
            self.items = tf.Variable([[5.0], [4.0], [3.0], [2.0], [1.0]])

        @tf.function(input_signature=user_spec)
        def user_embedding(self, user_id: Any, age: Any, gender: Any, occupation: Any) -> Any:
            return {"embedding": tf.gather(self.users, user_id - 1)}

        @tf.function(input_signature=[])
        def item_embeddings(self) -> Any:
            return {"item_ids": tf.identity(self.item_ids), "embeddings": tf.identity(self.items)}

    module = Fixed()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "user_embedding": module.user_embedding,
            "item_embeddings": module.item_embeddings,
        },
    )


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fixed")
    _write_fixed_model(root / "model")
    split = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2],
            "item_id": [10, 20, 30, 50, 40, 10],
            "split": ["train", "valid", "test", "train", "valid", "test"],
        }
    )
    split.to_parquet(root / "split.parquet")
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "age": [30, 40],
            "gender": ["M", "F"],
            "occupation": ["x", "y"],
            "event_timestamp": pd.Timestamp("2020-01-01", tz="UTC"),
        }
    )
    users.to_parquet(root / "users.parquet")
    return {
        "model_dir": str(root / "model"),
        "split_uri": str(root / "split.parquet"),
        "users_uri": str(root / "users.parquet"),
    }


def test_test_split_masks_train_and_valid(fixed: dict[str, Any]) -> None:
    # User 1 ranks 30, 40, 50 once 10 and 20 are masked: hit at 1.
    # User 2 ranks 30, 20, 10 once 50 and 40 are masked: hit at 3.
    at1 = evaluate(EvalConfig(**fixed, k=1, split="test"))
    assert (at1.recall_at_k, at1.hit_at_k, at1.mrr_at_k, at1.ndcg_at_k) == (0.5, 0.5, 0.5, 0.5)
    at3 = evaluate(EvalConfig(**fixed, k=3, split="test"))
    assert at3.recall_at_k == pytest.approx(1.0)
    assert at3.mrr_at_k == pytest.approx((1 + 1 / 3) / 2)
    assert at3.ndcg_at_k == pytest.approx((1 + 0.5) / 2)
    assert at3.precision_at_k == pytest.approx(1 / 3)
    assert (at3.n_users, at3.k, at3.split) == (2, 3, "test")


def test_valid_split_masks_train_only(fixed: dict[str, Any]) -> None:
    # User 1: 20 is best once 10 is masked; user 2: 40 is best once 50 is masked.
    got = evaluate(EvalConfig(**fixed, k=1, split="valid"))
    assert got.recall_at_k == pytest.approx(1.0)
    assert got.to_dict()["split"] == "valid"


def test_user_without_features_is_named(fixed: dict[str, Any], tmp_path: Path) -> None:
    users = pd.read_parquet(fixed["users_uri"])
    users[users["user_id"] == 1].to_parquet(tmp_path / "users.parquet")
    with pytest.raises(ValueError, match=r"user_id \[2\]"):
        evaluate(EvalConfig(**{**fixed, "users_uri": str(tmp_path / "users.parquet")}))
    with pytest.raises(ValueError, match="split='train'"):
        EvalConfig(**fixed, split="train")


def test_trained_model_beats_random(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    trained = train(
        TrainConfig(
            training_set_uri=data.training_set_uri,
            users_uri=data.users_uri,
            items_uri=data.items_uri,
            output_dir=str(tmp_path / "train"),
            epochs=2,
            embedding_dim=16,
            batch_size=128,
            logq_correction=True,
        )
    )
    got = evaluate(
        EvalConfig(
            model_dir=trained.model_dir, split_uri=trained.split_uri, users_uri=data.users_uri
        )
    )
    # Random ranking hits 10 of the ~123 unseen items: Recall@10 about 0.08.
    assert got.recall_at_k > 0.2
    assert got.n_users == data.n_users
    assert all(0.0 <= v <= 1.0 for v in (got.ndcg_at_k, got.hit_at_k, got.mrr_at_k))
    assert np.isfinite(got.precision_at_k)
