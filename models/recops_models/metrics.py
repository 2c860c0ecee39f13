"""Full-ranking top-K metrics, as RecBole defines them, in pure numpy.

Every user is scored against every item; items the user already consumed (train, and
valid when scoring test) are masked out before ranking. Per-user values are averaged over
users, which is how RecBole reports Recall, NDCG, Hit, MRR and Precision @K:

- Recall@K = hits in the top K / number of ground-truth items;
- Precision@K = hits in the top K / K;
- Hit@K = 1 if any ground-truth item is in the top K;
- MRR@K = 1 / rank of the first hit in the top K (0 if none);
- NDCG@K = DCG@K / IDCG@K with binary gains, ``1 / log2(rank + 1)`` discounts and
  the ideal list holding ``min(|ground truth|, K)`` hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RankingMetrics", "full_ranking_metrics", "ranking_metrics", "top_k_items"]


@dataclass(frozen=True)
class RankingMetrics:
    """User-averaged top-K metrics."""

    recall: float
    ndcg: float
    hit: float
    mrr: float
    precision: float
    k: int
    n_users: int

    def to_dict(self) -> dict[str, float | int]:
        """Return the metrics as a JSON-serialisable dict."""
        return asdict(self)


#: Rows ranked per block: bounds the float64 copy and the sort to ``block x n_items``
#: (50k users x 20k items would otherwise need about 20 GB at once).
ROW_BLOCK = 1024


def top_k_items(
    scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """Return the column indices of the ``k`` best scores per row, best first.

    Args:
        scores: Float array ``[n_users, n_items]``.
        k: How many items to keep per user; at most ``n_items``.
        exclude: Optional per-user arrays of column indices to mask out (the items the
            user has already seen), one array per row of ``scores``.

    Returns:
        Int64 array ``[n_users, k]``. Ties break towards the lower column index, so
        results do not depend on the sort algorithm.

    Raises:
        ValueError: If shapes disagree or ``k`` is out of range.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [users, items], got shape {scores.shape}")
    n_users, n_items = scores.shape
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must be in 1..n_items={n_items}")
    if exclude is not None and len(exclude) != n_users:
        raise ValueError(f"exclude has {len(exclude)} rows, scores has {n_users}")
    out = np.empty((n_users, k), dtype=np.int64)
    for start in range(0, n_users, ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        out[rows] = _top_k_block(scores[rows], k, None if exclude is None else exclude[rows])
    return out


def _top_k_block(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None) -> np.ndarray:
    """Exact top-k of one block: a partition, then a sort of only the k kept per row.

    The partition picks an arbitrary subset when equal scores straddle the k-th place, and
    NaN has no order; those rows (rare with real-valued scores) take the full stable sort,
    so every row gets exactly what ``argsort(-scores, kind="stable")[:, :k]`` gives.
    """
    masked = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for row, cols in enumerate(exclude):
            if len(cols):
                masked[row, np.asarray(cols, dtype=np.int64)] = -np.inf
    n_items = masked.shape[1]
    if k == n_items:
        return np.argsort(-masked, axis=1, kind="stable")
    kept = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(masked, kept, axis=1)
    kth = values.min(axis=1, keepdims=True)
    # Exact when the k kept are all scores >= the k-th best and no other column ties it.
    exact = ((masked >= kth).sum(axis=1) == k) & ~np.isnan(masked).any(axis=1)
    # Best first, ties towards the lower column: lexsort's last key is the primary one.
    order = np.lexsort((kept, -values), axis=1)
    top = np.take_along_axis(kept, order, axis=1)
    redo = np.flatnonzero(~exact)
    if redo.size:
        top[redo] = np.argsort(-masked[redo], axis=1, kind="stable")[:, :k]
    return top.astype(np.int64)


def ranking_metrics(
    top_k: np.ndarray, ground_truth: Sequence[np.ndarray], k: int
) -> RankingMetrics:
    """Compute the metrics from ranked lists and each user's relevant items.

    Args:
        top_k: Int array ``[n_users, >= k]`` of item indices, best first.
        ground_truth: One array of relevant item indices per user; none may be empty
            (RecBole evaluates only users who have ground truth).
        k: Cut-off.

    Returns:
        The user-averaged metrics.

    Raises:
        ValueError: If shapes disagree or a user has no ground truth.
    """
    if top_k.ndim != 2 or top_k.shape[1] < k or k < 1:
        raise ValueError(f"top_k shape {top_k.shape} does not hold k={k} items per user")
    n_users = top_k.shape[0]
    if len(ground_truth) != n_users:
        raise ValueError(f"ground_truth has {len(ground_truth)} users, top_k has {n_users}")
    if n_users == 0:
        raise ValueError("no users to evaluate")
    ranked = top_k[:, :k]
    hits = np.zeros((n_users, k), dtype=bool)
    n_relevant = np.zeros(n_users, dtype=np.float64)
    for row, relevant in enumerate(ground_truth):
        relevant = np.unique(np.asarray(relevant, dtype=np.int64))
        if relevant.size == 0:
            raise ValueError(f"user row {row} has no ground-truth items")
        hits[row] = np.isin(ranked[row], relevant)
        n_relevant[row] = relevant.size
    n_hits = hits.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal_cum = np.cumsum(discounts)
    idcg = ideal_cum[np.minimum(n_relevant, k).astype(np.int64) - 1]
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
    mrr = np.where(first_hit > 0, 1.0 / np.maximum(first_hit, 1), 0.0)
    return RankingMetrics(
        recall=float(np.mean(n_hits / n_relevant)),
        ndcg=float(np.mean(dcg / idcg)),
        hit=float(np.mean(n_hits > 0)),
        mrr=float(np.mean(mrr)),
        precision=float(np.mean(n_hits / k)),
        k=k,
        n_users=n_users,
    )


def full_ranking_metrics(
    scores: np.ndarray,
    ground_truth: Sequence[np.ndarray],
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
) -> RankingMetrics:
    """Rank all items per user, masking ``exclude``, and score against ground truth.

    Args:
        scores: Float array ``[n_users, n_items]`` (ranked in row blocks, so only the
            scores themselves need to fit in memory).
        ground_truth: Relevant item (column) indices per user.
        k: Cut-off.
        exclude: Column indices to mask per user (train items; plus valid items when
            scoring test, as RecBole does).

    Returns:
        The user-averaged metrics.
    """
    return ranking_metrics(top_k_items(scores, k, exclude), ground_truth, k)
