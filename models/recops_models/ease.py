"""EASE (Steck, 2019): closed-form item-item ridge regression, a strong linear baseline.

``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; a user's scores
are their interaction row times ``B``. Pure numpy, cheap to import; a benchmark baseline,
not served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recops_models.vocab import rows_for_ids

__all__ = ["EASEModel", "fit_ease"]


@dataclass(frozen=True)
class EASEModel:
    """Item-item weights and the train interaction matrix, keyed by raw ids.

    Attributes:
        user_ids: Sorted raw ids of the train users, one per row of ``interactions``.
        item_ids: The catalogue, in score column order.
        interactions: Binary train matrix ``[len(user_ids), len(item_ids)]``.
        weights: Item-item matrix ``[len(item_ids), len(item_ids)]``, zero diagonal.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    interactions: np.ndarray
    weights: np.ndarray

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        """Score every catalogue item for each user.

        Args:
            user_ids: Raw user ids.

        Returns:
            Scores ``[len(user_ids), len(item_ids)]``; unknown users score 0.
        """
        rows = rows_for_ids(self.user_ids, self.interactions, user_ids)
        return np.asarray(rows @ self.weights)


def fit_ease(
    user_id: np.ndarray, item_id: np.ndarray, item_ids: np.ndarray, l2: float = 400.0
) -> EASEModel:
    """Fit EASE on binary train interactions over the catalogue ``item_ids``.

    Args:
        user_id: Raw user id of each train interaction.
        item_id: Raw item id of each train interaction (must be in ``item_ids``).
        item_ids: The catalogue, in score column order.
        l2: Ridge strength λ (400 for ml-100k).

    Returns:
        The fitted model.

    Raises:
        ValueError: If an interaction's item is not in the catalogue.
    """
    item_ids = np.asarray(item_ids, dtype=np.int64)
    order = np.argsort(item_ids)
    cols = np.searchsorted(item_ids[order], np.asarray(item_id, dtype=np.int64))
    cols = np.minimum(cols, item_ids.size - 1)
    if not np.array_equal(item_ids[order][cols], np.asarray(item_id, dtype=np.int64)):
        raise ValueError("fit_ease: some interactions have items outside item_ids")
    cols = order[cols]
    user_vocab, rows = np.unique(np.asarray(user_id, dtype=np.int64), return_inverse=True)
    matrix = np.zeros((user_vocab.size, item_ids.size), dtype=np.float64)
    matrix[rows, cols] = 1.0
    gram = matrix.T @ matrix
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0.0
    return EASEModel(user_ids=user_vocab, item_ids=item_ids, interactions=matrix, weights=weights)
