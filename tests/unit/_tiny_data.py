"""Tiny synthetic MovieLens-shaped tables with planted structure, for model tests.

Users and items fall into three taste clusters. A user's occupation names the cluster
and an item's genre bits encode it; most of a user's interactions are items of the same
cluster. A model that learns anything ranks in-cluster items first and beats random by a
wide margin, in a couple of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

N_CLUSTERS = 3
OCCUPATIONS = ("engineer", "artist", "doctor")


@dataclass(frozen=True)
class TinyData:
    """Paths of the written tables."""

    training_set_uri: str
    users_uri: str
    items_uri: str
    n_users: int
    n_items: int
    n_rows: int


def write_tiny_data(
    root: Path,
    *,
    n_users: int = 60,
    n_items: int = 150,
    per_user: int = 30,
    in_cluster: float = 0.9,
    seed: int = 0,
) -> TinyData:
    """Write users.parquet, items.parquet and training_set.parquet under ``root``.

    Args:
        root: Folder to write into (created).
        n_users: Users, ids 1..n_users.
        n_items: Items, ids 1..n_items (>= RETRIEVAL_K so top-100 is well defined).
        per_user: Interactions per user.
        in_cluster: Share of a user's interactions drawn from the user's cluster.
        seed: Random seed.

    Returns:
        The paths and sizes.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    valid_from = pd.Timestamp("2020-01-01", tz="UTC")

    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    user_cluster = (user_ids - 1) % N_CLUSTERS
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "age": rng.integers(18, 70, n_users).astype(np.int64),
            "gender": np.where(user_ids % 2 == 0, "F", "M"),
            "occupation": [OCCUPATIONS[c] for c in user_cluster],
            "zip_code": [f"{10000 + u:05d}" for u in user_ids],
            "event_timestamp": valid_from,
        }
    )

    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    item_cluster = (item_ids - 1) % N_CLUSTERS
    # Genre bit 1 + cluster marks the cluster; bit 0 is noise shared by everyone.
    genre_mask = (np.int64(1) << (item_cluster + 1)) | rng.integers(0, 2, n_items)
    years = rng.integers(1950, 2000, n_items).astype(np.int64)
    years[::17] = 0  # some unknown release years, as in ml-100k
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Item {i}" for i in item_ids],
            "release_year": years,
            "genre_mask": genre_mask.astype(np.int64),
            "event_timestamp": valid_from,
        }
    )

    rows = []
    n_in = int(round(per_user * in_cluster))
    for user, cluster in zip(user_ids, user_cluster, strict=True):
        own = item_ids[item_cluster == cluster]
        other = item_ids[item_cluster != cluster]
        picked = np.concatenate(
            [
                rng.choice(own, n_in, replace=False),
                rng.choice(other, per_user - n_in, replace=False),
            ]
        )
        for item in picked:
            rows.append((user, item))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"]).astype(np.int64)
    inter["rating"] = rng.integers(1, 6, len(inter)).astype(np.int64)
    inter["event_timestamp"] = valid_from + pd.to_timedelta(
        rng.integers(0, 86_400 * 30, len(inter)), unit="s"
    )
    training_set = inter.merge(
        users[["user_id", "age", "gender", "occupation"]], on="user_id"
    ).merge(items[["item_id", "release_year", "genre_mask"]], on="item_id")

    paths = {name: root / f"{name}.parquet" for name in ("users", "items", "training_set")}
    users.to_parquet(paths["users"], index=False)
    items.to_parquet(paths["items"], index=False)
    training_set.to_parquet(paths["training_set"], index=False)
    return TinyData(
        training_set_uri=str(paths["training_set"]),
        users_uri=str(paths["users"]),
        items_uri=str(paths["items"]),
        n_users=n_users,
        n_items=n_items,
        n_rows=len(training_set),
    )
