"""BPR-MF and EASE learn the planted taste clusters that popularity cannot see."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_data import write_tiny_data
from recops.evaluation import evaluate_scores
from recops.training import split_interactions

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    data = write_tiny_data(tmp_path_factory.mktemp("bpr"))
    frame = pd.read_parquet(data.training_set_uri)
    return split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())


def _popularity_recall(split: pd.DataFrame, item_ids: np.ndarray) -> float:
    counts = split[split["split"] == "train"]["item_id"].value_counts()
    pop = counts.reindex(item_ids, fill_value=0).to_numpy(np.float64)
    return evaluate_scores(
        lambda users: np.tile(pop, (users.size, 1)), split=split, item_ids=item_ids
    ).recall_at_k


def test_bpr_beats_popularity(split: pd.DataFrame) -> None:
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
    item_ids = np.sort(split["item_id"].unique())
    got = evaluate_scores(
        lambda users: model.scores(users, item_ids), split=split, item_ids=item_ids
    )
    popularity = _popularity_recall(split, item_ids)
    # Random ranking of the ~123 unseen items gives Recall@10 about 0.08.
    assert got.recall_at_k > popularity + 0.05
    assert model.user_factors.shape == (60, 16)
    # Unknown ids score 0 instead of failing.
    assert np.all(model.scores(np.array([10_000]), item_ids) == 0.0)


def test_ease_beats_popularity(split: pd.DataFrame) -> None:
    from recops_models.ease import fit_ease

    train = split[split["split"] == "train"]
    item_ids = np.sort(split["item_id"].unique())
    model = fit_ease(train["user_id"].to_numpy(), train["item_id"].to_numpy(), item_ids, l2=10.0)
    assert np.all(np.diag(model.weights) == 0.0)
    got = evaluate_scores(model.scores, split=split, item_ids=item_ids)
    assert got.recall_at_k > _popularity_recall(split, item_ids) + 0.05
    with pytest.raises(ValueError, match="outside item_ids"):
        fit_ease(np.array([1]), np.array([10_000]), item_ids)


def test_bpr_rejects_empty_input(tmp_path: Path) -> None:
    from recops_models.bpr import fit_bpr

    with pytest.raises(ValueError, match="non-empty"):
        fit_bpr(np.array([], np.int64), np.array([], np.int64))
