"""Raw id ↔ dense index lookups over sorted vocabularies, shared by every model.

Pure numpy and a leaf (imports nothing from ``recops_models``), so the pure-numpy
baselines (EASE) and the TensorFlow models use the same lookups without importing each
other.

- ``sorted_vocab``: the sorted unique values a vocabulary is built from.
- ``lookup_index``: raw values to 1-based positions, 0 (``OOV_INDEX``) when unknown, as
  the Keras models' embedding inputs expect.
- ``rows_for_ids``: raw ids to rows of a per-id table, zeros when unknown, as the
  numpy baselines score.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["OOV_INDEX", "lookup_index", "rows_for_ids", "sorted_vocab"]

#: Index reserved for values missing from a vocabulary.
OOV_INDEX = 0


def sorted_vocab(values: Iterable[Any]) -> np.ndarray:
    """Return the sorted unique values.

    Args:
        values: Raw values (ids or strings), any iterable.

    Returns:
        The sorted vocabulary as an array.
    """
    return np.unique(np.asarray(list(values)))


def lookup_index(vocab: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Map values to 1-based positions in the sorted ``vocab``; unknown values to 0.

    Args:
        vocab: A sorted vocabulary (``sorted_vocab``'s output).
        values: Raw values of the same kind.

    Returns:
        Int64 indices with the shape of ``values``.
    """
    values = np.asarray(values)
    if vocab.size == 0:
        return np.zeros(values.shape, dtype=np.int64)
    pos = np.searchsorted(vocab, values)
    clipped = np.minimum(pos, vocab.size - 1)
    found = vocab[clipped] == values
    return np.where(found, clipped + 1, OOV_INDEX).astype(np.int64)


def rows_for_ids(vocab: np.ndarray, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of ``table`` for raw ``ids``; ids missing from ``vocab`` get a zero row.

    Args:
        vocab: Sorted, non-empty int64 ids; row ``i`` of ``table`` belongs to ``vocab[i]``.
        table: Per-id rows ``[len(vocab), width]``.
        ids: Raw ids to look up.

    Returns:
        ``[len(ids), width]`` rows.
    """
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.minimum(np.searchsorted(vocab, ids), vocab.size - 1)
    found = vocab[pos] == ids
    return np.where(found[:, None], table[pos], 0.0)
