"""BPR-MF (``recops_models.bpr``) learns the taste clusters that popularity cannot see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from recops.evaluation import evaluate_scores
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()


def test_bpr_beats_popularity(
    split: pd.DataFrame, item_ids: np.ndarray, popularity_recall: float
) -> None:
    from recops_models.bpr import fit_bpr

    train = split[split["split"] == "train"]
    model = fit_bpr(
        train["user_id"].to_numpy(),
        train["item_id"].to_numpy(),
        embedding_dim=16,
        epochs=20,
        batch_size=128,
        learning_rate=0.01,
        seed=0,
    )
    got = evaluate_scores(
        lambda users: model.scores(users, item_ids), split=split, item_ids=item_ids
    )
    # Random ranking of the ~123 unseen items gives Recall@10 about 0.08.
    assert got.recall_at_k > popularity_recall + 0.05
    assert model.user_factors.shape == (60, 16)
    # Unknown ids score 0 instead of failing.
    assert np.all(model.scores(np.array([10_000]), item_ids) == 0.0)


def test_bpr_rejects_empty_input() -> None:
    from recops_models.bpr import fit_bpr

    with pytest.raises(ValueError, match="non-empty"):
        fit_bpr(np.array([], np.int64), np.array([], np.int64))


def test_sample_negatives_avoid_the_users_items() -> None:
    from recops_models.bpr import sample_negatives

    # One item per user out of 1,000: a clash surviving six draws is a 1e-18 event.
    n_items = 1000
    user_idx = np.arange(1, 101, dtype=np.int64)
    item_idx = (user_idx * 7) % n_items + 1
    negatives = sample_negatives(user_idx, item_idx, n_items, np.random.default_rng(0))
    assert negatives.shape == user_idx.shape
    assert negatives.dtype == np.int64
    assert np.all((negatives >= 1) & (negatives <= n_items))
    assert not np.any(negatives == item_idx)
    # Same seed, same draws.
    again = sample_negatives(user_idx, item_idx, n_items, np.random.default_rng(0))
    np.testing.assert_array_equal(negatives, again)
