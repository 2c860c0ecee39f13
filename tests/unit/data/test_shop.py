"""The shop generator plants structure a model learns: the trained two-tower beats popularity.

A small e-commerce log (string keys, view / add_to_cart / purchase, products with
category, brand, price and a name) goes through the real train stage and the real
evaluation; only add-to-carts and purchases count as hits and every interacted item is
masked, as the shop spec says. Popularity is fitted on the same split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from recops.data.synthetic import mode_spec_path, synthesize
from recops.dataset_spec import load_spec
from recops.evaluation import EvalConfig, evaluate, evaluate_scores
from recops.layout import layout_from_spec
from recops.training import TrainConfig, train


def test_the_trained_model_beats_popularity_on_held_out_positives(tmp_path: Path) -> None:
    spec_uri = str(mode_spec_path("shop"))
    layout = layout_from_spec(load_spec(spec_uri))
    events, users, items = synthesize(rows=9000, users=300, items=300, days=30, seed=3,
                                      mode="shop")  # fmt: skip
    assert users["user_id"].dtype == np.int64  # string keys interned to ids
    training_set = events.merge(users.drop(columns="event_timestamp"), on="user_id").merge(
        items.drop(columns="event_timestamp"), on="item_id"
    )[list(layout.training_set_columns)]
    uris = {}
    for name, frame in (("training_set", training_set), ("users", users), ("items", items)):
        uris[f"{name}_uri"] = str(tmp_path / f"{name}.parquet")
        frame.to_parquet(uris[f"{name}_uri"], index=False)

    trained = train(
        TrainConfig(
            **uris,
            spec_uri=spec_uri,
            output_dir=str(tmp_path / "train"),
            epochs=4,
            embedding_dim=16,
            batch_size=256,
        )  # fmt: skip
    )
    model = evaluate(
        EvalConfig(
            model_dir=trained.model_dir,
            split_uri=trained.split_uri,
            users_uri=uris["users_uri"],
            spec_uri=spec_uri,
        )  # fmt: skip
    )
    split = pd.read_parquet(trained.split_uri)
    train_rows = split[
        (split["split"] == "train") & split["event_type"].isin(layout.positive_types)
    ]
    item_ids = np.sort(items["item_id"].to_numpy())
    counts = train_rows["item_id"].value_counts().reindex(item_ids, fill_value=0)
    popular = counts.to_numpy(np.float64)
    popularity = evaluate_scores(
        lambda block: np.tile(popular, (block.size, 1)),
        split=split,
        item_ids=item_ids,
        positive_types=layout.positive_types,
        seen_types=layout.seen_types,
    )

    assert model.recall_at_k > 1.3 * popularity.recall_at_k, (model, popularity)
    assert model.ndcg_at_k > popularity.ndcg_at_k, (model, popularity)
