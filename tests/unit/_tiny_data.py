"""Tiny synthetic tables in the published layout (``recops.layout``), with planted structure.

Users and items fall into three taste clusters. A user's ``occupation`` names the cluster
and an item's ``genres`` (a multi-valued categorical) include it; most of a user's
interactions are items of the same cluster. A model that learns anything ranks in-cluster
items first and beats random by a wide margin, in a couple of epochs.

``spec.yaml`` beside the tables declares them (every attribute kind is present), so the
stages read their features from it as they do for any dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

N_CLUSTERS = 3
OCCUPATIONS = ("engineer", "artist", "doctor")
GENRES = ("drama", "comedy", "horror")

#: The tiny dataset's spec: its attributes cover every kind the models encode.
TINY_SPEC = """\
name: tiny
users:
  key: user_id
  key_type: integer
  attributes:
    - {name: age, column: age, kind: numeric, not_null: true, range: [1, 120]}
    - {name: gender, column: gender, kind: categorical, not_null: true, allowed: [M, F]}
    - {name: occupation, column: occupation, kind: categorical, not_null: true}
    - {name: zip_code, column: zip_code, kind: text}
items:
  key: item_id
  key_type: integer
  attributes:
    - {name: title, column: title, kind: text}
    - {name: release_year, column: release_year, kind: numeric, range: [1900, 2100]}
    - {name: genres, column: genres, kind: multi_categorical, separator: "|", not_null: true}
events:
  user_key: user_id
  item_key: item_id
  timestamp: {column: timestamp, format: unix_seconds}
  value: {column: rating, range: [1, 5]}
"""


@dataclass(frozen=True)
class TinyData:
    """Paths of the written tables."""

    training_set_uri: str
    users_uri: str
    items_uri: str
    spec_uri: str
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
    """Write users.parquet, items.parquet, training_set.parquet and spec.yaml under ``root``.

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
            "age": rng.integers(18, 70, n_users).astype(np.float64),
            "gender": np.where(user_ids % 2 == 0, "F", "M"),
            "occupation": [OCCUPATIONS[c] for c in user_cluster],
            "zip_code": [f"{10000 + u:05d}" for u in user_ids],
            "event_timestamp": valid_from,
        }
    )

    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    item_cluster = (item_ids - 1) % N_CLUSTERS
    # The cluster's genre marks the cluster; "classic" is noise shared by everyone.
    noise = rng.integers(0, 2, n_items)
    genres = [
        GENRES[c] + ("|classic" if n else "") for c, n in zip(item_cluster, noise, strict=True)
    ]
    years = rng.integers(1950, 2000, n_items).astype(np.float64)
    years[::17] = np.nan  # some unknown release years
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Item {i} {GENRES[c]}" for i, c in zip(item_ids, item_cluster, strict=True)],
            "release_year": years,
            "genres": genres,
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
    inter["event_timestamp"] = valid_from + pd.to_timedelta(
        rng.integers(0, 86_400 * 30, len(inter)), unit="s"
    )
    inter["event_timestamp"] = inter["event_timestamp"].astype("datetime64[us, UTC]")
    inter["event_type"] = "interaction"
    inter["weight"] = rng.integers(1, 6, len(inter)).astype(np.float64)
    user_attrs = users.drop(columns="event_timestamp")
    item_attrs = items.drop(columns="event_timestamp")
    training_set = inter.merge(user_attrs, on="user_id").merge(item_attrs, on="item_id")

    paths = {name: root / f"{name}.parquet" for name in ("users", "items", "training_set")}
    users.to_parquet(paths["users"], index=False)
    items.to_parquet(paths["items"], index=False)
    training_set.to_parquet(paths["training_set"], index=False)
    spec_path = root / "spec.yaml"
    spec_path.write_text(TINY_SPEC)
    return TinyData(
        training_set_uri=str(paths["training_set"]),
        users_uri=str(paths["users"]),
        items_uri=str(paths["items"]),
        spec_uri=str(spec_path),
        n_users=n_users,
        n_items=n_items,
        n_rows=len(training_set),
    )
