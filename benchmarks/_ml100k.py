"""MovieLens-100K as the parquet files the stages read, shared by the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_data(workdir: Path) -> dict[str, str]:
    """Write ml-100k's training set, users and items as parquet under ``workdir/data``.

    The training set is the interactions with the profile columns joined on, as the
    features stage's ``retrieval_v1`` service produces it; Feast is not needed here.
    Files already written are reused.

    Returns:
        ``training_set_uri``, ``users_uri`` and ``items_uri``.
    """
    from recops.config import Settings
    from recops.data import fetch_movielens, load_movielens

    data = workdir / "data"
    paths = {name: data / f"{name}.parquet" for name in ("training_set", "users", "items")}
    if not all(p.is_file() for p in paths.values()):
        interactions, users, items = load_movielens(fetch_movielens(Settings.from_env()))
        training_set = interactions.merge(
            users[["user_id", "age", "gender", "occupation"]], on="user_id", validate="many_to_one"
        ).merge(
            items[["item_id", "release_year", "genre_mask"]], on="item_id", validate="many_to_one"
        )
        data.mkdir(parents=True, exist_ok=True)
        for name, frame in (("training_set", training_set), ("users", users), ("items", items)):
            tmp = paths[name].with_name(f".{paths[name].name}.tmp")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, paths[name])
    return {f"{name}_uri": str(path) for name, path in paths.items()}
