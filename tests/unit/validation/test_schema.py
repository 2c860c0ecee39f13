"""Tests for the published schema: genre bit masks and the shared value sets."""

from __future__ import annotations

import pytest
from recops.errors import DataError
from recops.validation.schema import GENRES, ML100K_OCCUPATIONS, N_GENRES, OCCUPATIONS, genre_mask


def test_unknown_genre_is_refused() -> None:
    assert genre_mask([GENRES[1], GENRES[18]]) == (1 << 1) | (1 << 18)
    with pytest.raises(DataError, match="Horrror"):
        genre_mask(["Horrror"])


def test_value_sets_agree() -> None:
    assert N_GENRES == 19 and genre_mask(GENRES) == 2**N_GENRES - 1
    assert len(OCCUPATIONS) == 21 and frozenset(OCCUPATIONS) == ML100K_OCCUPATIONS
    assert list(OCCUPATIONS) == sorted(OCCUPATIONS)
