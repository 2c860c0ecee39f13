"""EASE (``recops_models.ease``): the closed form, raw-id handling, and that it learns the
planted taste clusters that popularity cannot see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from recops.evaluation import evaluate_scores
from recops_models.ease import fit_ease


def test_ease_beats_popularity(
    split: pd.DataFrame, item_ids: np.ndarray, popularity_recall: float
) -> None:
    train = split[split["split"] == "train"]
    model = fit_ease(train["user_id"].to_numpy(), train["item_id"].to_numpy(), item_ids, l2=10.0)
    assert np.all(np.diag(model.weights) == 0.0)
    got = evaluate_scores(model.scores, split=split, item_ids=item_ids)
    assert got.recall_at_k > popularity_recall + 0.05
    with pytest.raises(ValueError, match="outside item_ids"):
        fit_ease(np.array([1]), np.array([10_000]), item_ids)


def test_ease_matches_the_closed_form() -> None:
    # Raw ids out of order, and a catalogue item (40) nobody interacted with.
    user_id = np.array([7, 7, 3, 3, 3, 9])
    item_id = np.array([20, 10, 10, 30, 20, 30])
    item_ids = np.array([30, 10, 40, 20])
    l2 = 2.0
    model = fit_ease(user_id, item_id, item_ids, l2=l2)

    np.testing.assert_array_equal(model.user_ids, [3, 7, 9])
    np.testing.assert_array_equal(model.item_ids, item_ids)
    # Rows follow the sorted users, columns the catalogue order.
    expected_x = np.array(
        [
            [1.0, 1.0, 0.0, 1.0],  # user 3: items 30, 10, 20
            [0.0, 1.0, 0.0, 1.0],  # user 7: items 10, 20
            [1.0, 0.0, 0.0, 0.0],  # user 9: item 30
        ]
    )
    np.testing.assert_array_equal(model.interactions.toarray(), expected_x)
    p = np.linalg.inv(expected_x.T @ expected_x + l2 * np.eye(4))
    expected_b = np.eye(4) - p / np.diag(p)
    np.testing.assert_allclose(model.weights, expected_b, atol=1e-12)
    assert np.all(np.diag(model.weights) == 0.0)


def test_ease_scores_are_rows_times_weights_and_zero_for_unknown_users() -> None:
    model = fit_ease(np.array([1, 1, 2]), np.array([5, 6, 6]), np.array([5, 6, 8]), l2=1.0)
    scores = model.scores(np.array([2, 99, 1]))
    assert scores.shape == (3, 3)
    np.testing.assert_allclose(scores[0], model.interactions.toarray()[1] @ model.weights)
    np.testing.assert_array_equal(scores[1], np.zeros(3))
    np.testing.assert_allclose(scores[2], model.interactions.toarray()[0] @ model.weights)
    # User 2 saw only item 6, which co-occurs with item 5 (user 1): 5 must outrank 8.
    assert scores[0, 0] > scores[0, 2]


def test_ease_float32_above_the_float64_size_matches_the_closed_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Above FLOAT64_MAX_ITEMS the solve runs in float32 with blocked Gram and mirroring;
    # a tiny threshold and block exercise both paths on a small catalogue.
    from recops_models import ease

    monkeypatch.setattr(ease, "FLOAT64_MAX_ITEMS", 4)
    monkeypatch.setattr(ease, "_GRAM_BLOCK", 3)
    rng = np.random.default_rng(3)
    user_id = rng.integers(0, 40, 400)
    item_id = rng.integers(100, 110, 400)
    item_ids = np.arange(109, 99, -1)
    model = ease.fit_ease(user_id, item_id, item_ids, l2=5.0)
    assert model.weights.dtype == np.float32
    dense = model.interactions.toarray().astype(np.float64)
    assert set(np.unique(dense)) == {0.0, 1.0}  # repeats count once
    p = np.linalg.inv(dense.T @ dense + 5.0 * np.eye(10))
    np.testing.assert_allclose(model.weights, np.eye(10) - p / np.diag(p), atol=1e-5)
