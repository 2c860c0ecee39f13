"""EASE (Steck, 2019): closed-form item-item ridge regression, a strong linear baseline.

``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; a user's scores
are their interaction row times ``B``. numpy and scipy, cheap to import; a benchmark baseline,
not served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from recops_models.vocab import OOV_INDEX, lookup_index

__all__ = ["EASEModel", "fit_ease"]


#: Up to this catalogue size EASE is solved in float64 (seconds); above it in float32,
#: which halves the item-item matrix and the solve's time (20k items: 1.6 GB and about a
#: minute on 2 cores) at a relative error far below what changes a top-k.
FLOAT64_MAX_ITEMS = 8192
#: Item columns per block of the sparse Gram product: bounds its transient to
#: ``items x _GRAM_BLOCK`` entries whatever the co-occurrence density.
_GRAM_BLOCK = 2048


@dataclass(frozen=True)
class EASEModel:
    """Item-item weights and the train interaction matrix, keyed by raw ids.

    Attributes:
        user_ids: Sorted raw ids of the train users, one per row of ``interactions``.
        item_ids: The catalogue, in score column order.
        interactions: Binary train matrix ``[len(user_ids), len(item_ids)]``, sparse (CSR):
            dense it would be users x items.
        weights: Item-item matrix ``[len(item_ids), len(item_ids)]``, zero diagonal, float64
            up to ``FLOAT64_MAX_ITEMS`` items and float32 above.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    interactions: sparse.csr_array
    weights: np.ndarray

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        """Score every catalogue item for each user.

        Args:
            user_ids: Raw user ids.

        Returns:
            Scores ``[len(user_ids), len(item_ids)]``; unknown users score 0.
        """
        index = lookup_index(self.user_ids, np.asarray(user_ids, dtype=np.int64))
        found = index != OOV_INDEX
        rows = self.interactions[np.maximum(index - 1, 0)].astype(self.weights.dtype)
        scores: np.ndarray = np.asarray(rows @ self.weights) * found[:, None]
        return scores


def _gram(matrix: sparse.csr_array, l2: float, dtype: type[np.floating]) -> np.ndarray:
    """``XᵀX + λI`` as a dense Fortran-ordered array (what LAPACK factors in place)."""
    n = matrix.shape[1]
    gram = np.empty((n, n), dtype=dtype, order="F")
    by_column = matrix.tocsc()
    transposed = by_column.T.tocsr()
    for start in range(0, n, _GRAM_BLOCK):
        stop = min(start + _GRAM_BLOCK, n)
        gram[:, start:stop] = (transposed @ by_column[:, start:stop]).toarray()
    gram[np.diag_indices(n)] += l2
    return gram


def _inverse_spd(gram: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive-definite matrix, in place (Cholesky).

    Half the work of a general inverse, and no second n x n copy: the factor and then
    the inverse overwrite ``gram``, whose upper triangle is mirrored at the end.
    """
    from scipy.linalg import lapack

    single = gram.dtype == np.float32
    potrf, potri = (lapack.spotrf, lapack.spotri) if single else (lapack.dpotrf, lapack.dpotri)
    factor, info = potrf(gram, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: the Gram matrix is not positive definite ({info})")
    inverse: np.ndarray
    inverse, info = potri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: the Cholesky factor is singular ({info})")
    n = inverse.shape[0]
    for start in range(0, n, _GRAM_BLOCK):
        stop = min(start + _GRAM_BLOCK, n)
        # Row block i below the diagonal = transpose of the computed column block above.
        inverse[stop:, start:stop] = inverse[start:stop, stop:].T
        block = inverse[start:stop, start:stop]
        upper = np.triu(block)
        inverse[start:stop, start:stop] = upper + np.triu(block, 1).T
    return inverse


def fit_ease(
    user_id: np.ndarray, item_id: np.ndarray, item_ids: np.ndarray, l2: float = 400.0
) -> EASEModel:
    """Fit EASE on binary train interactions over the catalogue ``item_ids``.

    Memory is one item-item matrix (plus the sparse interactions): the Gram matrix is
    built from sparse blocks and inverted in place.

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
    dtype = np.float64 if item_ids.size <= FLOAT64_MAX_ITEMS else np.float32
    matrix = sparse.csr_array(
        (np.ones(rows.size, dtype), (rows, cols)), shape=(user_vocab.size, item_ids.size)
    )
    # Repeated (user, item) pairs are summed by the constructor; the matrix is binary.
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    # The inverse is symmetric and Fortran-ordered (LAPACK's); its transpose is the same
    # matrix in C order, whose rows the sparse history products read contiguously.
    weights = _inverse_spd(_gram(matrix, l2, dtype)).T
    diagonal = np.diag(weights).copy()
    weights /= -diagonal
    weights[np.diag_indices_from(weights)] = 0.0
    return EASEModel(user_ids=user_vocab, item_ids=item_ids, interactions=matrix, weights=weights)
