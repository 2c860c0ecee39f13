"""Full-ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from recops_models.metrics import full_ranking_metrics, ranking_metrics, top_k_items


def test_three_users_by_hand() -> None:
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],  # item 0 masked -> ranks 1, 2, 3
            [0.1, 0.2, 0.3, 0.4, 0.5],  # ranks 4, 3, 2
            [0.0, 0.0, 0.0, 0.0, 0.0],  # all tied -> ranks 0, 1, 2
        ]
    )
    exclude = [np.array([0]), np.array([], dtype=np.int64), np.array([], dtype=np.int64)]
    truth = [np.array([2, 4]), np.array([4]), np.array([3])]

    got = full_ranking_metrics(scores, truth, k=3, exclude=exclude)

    # user 0: hit at rank 2 of 2 relevant; user 1: hit at rank 1; user 2: no hit.
    ndcg_user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got.recall == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert got.precision == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert got.hit == pytest.approx(2 / 3)
    assert got.mrr == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert got.ndcg == pytest.approx((ndcg_user0 + 1.0 + 0.0) / 3)
    assert (got.k, got.n_users) == (3, 3)


def test_top_k_masks_and_breaks_ties_by_index() -> None:
    scores = np.array([[1.0, 5.0, 5.0, 3.0, 5.0]])
    assert top_k_items(scores, 3).tolist() == [[1, 2, 4]]
    assert top_k_items(scores, 3, [np.array([2])]).tolist() == [[1, 4, 3]]


def test_ndcg_ideal_list_is_capped_at_k() -> None:
    # Five relevant items, k = 2, both slots hit: NDCG is perfect, recall is 2/5.
    got = ranking_metrics(np.array([[7, 8]]), [np.array([5, 6, 7, 8, 9])], k=2)
    assert got.ndcg == pytest.approx(1.0)
    assert got.recall == pytest.approx(0.4)
    assert got.precision == pytest.approx(1.0)


def test_mrr_uses_first_hit_only() -> None:
    got = ranking_metrics(np.array([[0, 3, 1, 2]]), [np.array([1, 2])], k=4)
    assert got.mrr == pytest.approx(1 / 3)
    assert got.hit == 1.0


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="no ground-truth"):
        ranking_metrics(np.array([[0, 1]]), [np.array([], dtype=np.int64)], k=2)
    with pytest.raises(ValueError, match="k=6"):
        top_k_items(np.zeros((1, 5)), 6)
    with pytest.raises(ValueError, match="exclude has 2 rows"):
        top_k_items(np.zeros((1, 5)), 2, [np.array([0]), np.array([1])])


def _argsort_top_k(scores: np.ndarray, k: int, exclude: list[np.ndarray] | None) -> np.ndarray:
    masked = np.array(scores, dtype=np.float64, copy=True)
    for row, cols in enumerate(exclude or []):
        masked[row, cols] = -np.inf
    return np.argsort(-masked, axis=1, kind="stable")[:, :k]


def test_top_k_matches_a_full_stable_sort_with_ties_nan_and_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import recops_models.metrics as metrics

    # Small blocks so that several blocks, and a short last one, are exercised.
    monkeypatch.setattr(metrics, "ROW_BLOCK", 7)
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 50))
        k = int(rng.integers(1, m + 1))
        if trial % 3 == 0:
            scores = rng.normal(size=(n, m))
        elif trial % 3 == 1:  # many ties straddling the k-th place
            scores = rng.integers(0, 3, size=(n, m)).astype(np.float32)
        else:
            scores = rng.normal(size=(n, m))
            scores[rng.random((n, m)) < 0.1] = np.nan
        exclude = [rng.choice(m, size=int(rng.integers(0, m + 1)), replace=False) for _ in range(n)]
        for ex in (None, exclude):
            got = top_k_items(scores, k, ex)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(
                got, _argsort_top_k(scores, k, ex), err_msg=f"trial {trial}"
            )
