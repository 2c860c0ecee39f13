"""A deterministic synthetic dataset in the published schema, with planted structure.

The same arguments always give the same frames, so tests, benchmarks and the demo can
generate data of any size without a download.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recops.errors import DataError
from recops.validation.schema import GENRES, OCCUPATIONS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["synthesize"]


def synthesize(
    *, rows: int, users: int, items: int, days: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Deterministic synthetic data in the published schema, with planted structure.

    Each user belongs to one of a few taste clusters that prefer two genres; items carry
    one or two genres and a Zipf-like popularity. A user picks in-taste items 80 % of the
    time and rates them higher, so a recommender that learns anything beats popularity.

    Args:
        rows: Number of interactions.
        users: Number of users.
        items: Number of items.
        days: Days the events span, ending 1998-04-22 like ml-100k.
        seed: Generator seed; the same arguments always give the same frames.

    Returns:
        ``(interactions, users, items)`` frames.

    Raises:
        DataError: A count is below 1.
    """
    import numpy as np
    import pandas as pd

    if min(rows, users, items, days) < 1:
        raise DataError("synthetic rows, users, items and days must all be >= 1")
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    n_clusters = 6
    cluster_genres = rng.choice(np.arange(1, n_genres), size=(n_clusters, 2), replace=True)
    user_cluster = rng.integers(0, n_clusters, size=users)
    item_g1 = rng.integers(1, n_genres, size=items)
    item_g2 = np.where(rng.random(items) < 0.4, rng.integers(1, n_genres, size=items), item_g1)
    masks = (1 << item_g1) | (1 << item_g2)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity = popularity[rng.permutation(items)]

    in_taste = [np.flatnonzero((masks & ((1 << g[0]) | (1 << g[1]))) != 0) for g in cluster_genres]
    end = pd.Timestamp("1998-04-23", tz="UTC")
    start = end - pd.Timedelta(days=days)
    u = rng.integers(0, users, size=rows)
    pick_taste = rng.random(rows) < 0.8
    chosen = np.empty(rows, dtype=np.int64)
    liked = np.zeros(rows, dtype=bool)
    all_p = popularity / popularity.sum()
    for c in range(n_clusters):
        idx = np.flatnonzero(user_cluster[u] == c)
        pool = in_taste[c] if in_taste[c].size else np.arange(items)
        p = popularity[pool] / popularity[pool].sum()
        taste_idx = idx[pick_taste[idx]]
        chosen[taste_idx] = rng.choice(pool, size=taste_idx.size, p=p)
        other_idx = idx[~pick_taste[idx]]
        chosen[other_idx] = rng.choice(items, size=other_idx.size, p=all_p)
        liked[idx] = np.isin(chosen[idx], pool)
    rating = np.clip(np.where(liked, 4, 2) + rng.integers(-1, 2, size=rows), 1, 5)
    seconds = rng.integers(0, days * 86_400, size=rows)
    ts = (start + pd.to_timedelta(np.sort(seconds), unit="s")).astype("datetime64[us, UTC]")
    interactions = pd.DataFrame(
        {
            "user_id": (u + 1).astype("int64"),
            "item_id": (chosen + 1).astype("int64"),
            "rating": rating.astype("int64"),
            "event_timestamp": ts,
        }
    )
    # Sampling with replacement can repeat (user, item, second); keep the first event.
    interactions = interactions.drop_duplicates(
        ["user_id", "item_id", "event_timestamp"]
    ).reset_index(drop=True)
    valid_from = start - pd.Timedelta(days=1)
    users_df = pd.DataFrame(
        {
            "user_id": np.arange(1, users + 1, dtype=np.int64),
            "age": rng.integers(15, 70, size=users).astype("int64"),
            "gender": np.where(rng.random(users) < 0.5, "M", "F"),
            "occupation": np.asarray(OCCUPATIONS)[user_cluster % len(OCCUPATIONS)],
            "zip_code": [f"{z:05d}" for z in rng.integers(0, 100_000, size=users)],
            "event_timestamp": valid_from,
        }
    )
    items_df = pd.DataFrame(
        {
            "item_id": np.arange(1, items + 1, dtype=np.int64),
            "title": [f"Item {i}" for i in range(1, items + 1)],
            "release_year": rng.integers(1950, 1998, size=items).astype("int64"),
            "genre_mask": masks.astype("int64"),
            "event_timestamp": valid_from,
        }
    )
    return interactions, users_df, items_df
