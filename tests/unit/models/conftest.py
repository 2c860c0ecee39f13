"""Fixtures shared by the baseline tests (BPR, EASE): one split of the tiny dataset.

The tiny dataset plants taste clusters that popularity cannot see, so a baseline that
learns from co-occurrence must beat the popularity ranking on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _tiny_data import write_tiny_data
from recops.evaluation import evaluate_scores
from recops.training import split_interactions


@pytest.fixture(scope="session")
def split(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Train/valid/test split of the tiny dataset's interactions."""
    data = write_tiny_data(tmp_path_factory.mktemp("baselines"))
    frame = pd.read_parquet(data.training_set_uri)
    return split_interactions(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())


@pytest.fixture(scope="session")
def item_ids(split: pd.DataFrame) -> np.ndarray:
    """The catalogue of the split, sorted: the score columns."""
    return np.sort(split["item_id"].unique())


@pytest.fixture(scope="session")
def popularity_recall(split: pd.DataFrame, item_ids: np.ndarray) -> float:
    """Recall@K of ranking every user's items by train popularity."""
    counts = split[split["split"] == "train"]["item_id"].value_counts()
    pop = counts.reindex(item_ids, fill_value=0).to_numpy(np.float64)
    return float(
        evaluate_scores(
            lambda users: np.tile(pop, (users.size, 1)), split=split, item_ids=item_ids
        ).recall_at_k
    )
