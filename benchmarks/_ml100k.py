"""MovieLens-100K as the parquet files the stages read, shared by the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

#: Files written under ``workdir/data`` by ``prepare_data``.
_TABLES = ("training_set", "users", "items")


def ml100k_spec_uri() -> str:
    """The shipped MovieLens-100K spec (``datasets/movielens-100k.yaml``)."""
    from recops.layout import SHIPPED_SPECS

    return str(SHIPPED_SPECS / "movielens-100k.yaml")


def prepare_data(workdir: Path) -> dict[str, str]:
    """Write ml-100k's training set, users and items as parquet under ``workdir/data``.

    The tables are the published layout of ``datasets/movielens-100k.yaml``
    (``recops.layout``): the training set is the interactions (``user_id, item_id,
    event_timestamp, event_type, weight``) with every user and item attribute of the spec
    joined on, as the features stage's ``retrieval_v1`` service produces it; Feast is not
    needed here. Files already written with the layout's columns are reused.

    Returns:
        ``training_set_uri``, ``users_uri``, ``items_uri`` and ``spec_uri`` (the shipped
        spec), ready to splat into ``TrainConfig`` / ``RankerConfig``.
    """
    import pyarrow.parquet as pq
    from recops.config import Settings
    from recops.data import fetch_movielens, load_movielens
    from recops.dataset_spec import load_spec
    from recops.layout import layout_from_spec

    spec_uri = ml100k_spec_uri()
    layout = layout_from_spec(load_spec(spec_uri))
    columns = {
        "training_set": layout.training_set_columns,
        "users": layout.user_columns,
        "items": layout.item_columns,
    }
    data = workdir / "data"
    paths = {name: data / f"{name}.parquet" for name in _TABLES}
    # A workdir from before the spec-driven layout holds other columns: rebuild it.
    current = all(
        p.is_file() and tuple(pq.read_schema(p).names) == columns[name] for name, p in paths.items()
    )
    if not current:
        interactions, users, items = load_movielens(fetch_movielens(Settings.from_env()))
        user_attrs = [f.name for f in layout.user_features]
        item_attrs = [f.name for f in layout.item_features]
        training_set = interactions.merge(
            users[["user_id", *user_attrs]], on="user_id", validate="many_to_one"
        ).merge(items[["item_id", *item_attrs]], on="item_id", validate="many_to_one")
        frames = {
            "training_set": training_set[list(columns["training_set"])],
            "users": users[list(columns["users"])],
            "items": items[list(columns["items"])],
        }
        data.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            tmp = paths[name].with_name(f".{paths[name].name}.tmp")
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, paths[name])
    return {**{f"{name}_uri": str(path) for name, path in paths.items()}, "spec_uri": spec_uri}
