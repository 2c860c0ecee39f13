"""One tiny two-tower, trained a few epochs on the tiny data, for the model-module tests.

The compressors, edge and quantized tests all start from the same trained towers; this
module builds them once per test module (a module-scoped fixture in each file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _tiny_data import write_tiny_data
from recops.dataset_spec import load_spec
from recops.layout import layout_from_spec
from recops.splits import preceding_histories
from recops_models.tf_env import tensorflow

tf = tensorflow()

import tf_keras as keras  # noqa: E402
from recops_models.two_tower import (  # noqa: E402
    HISTORY_INPUT,
    InBatchSoftmaxLoss,
    TwoTowerSpec,
    build_training_model,
    model_inputs,
)


@dataclass
class Tiny:
    """A trained training model, its spec and the tables it was trained on."""

    model: Any
    spec: TwoTowerSpec
    users: pd.DataFrame
    items: pd.DataFrame
    rows: pd.DataFrame

    @property
    def catalogue(self) -> dict[str, np.ndarray]:
        return {c: self.items[c].to_numpy() for c in self.items.columns if c != "event_timestamp"}

    def dataset(self) -> Any:
        columns = {c: self.rows[c].to_numpy() for c in self.rows}
        if self.spec.history_length:
            columns[HISTORY_INPUT] = preceding_histories(
                self.rows["user_id"].to_numpy(),
                self.rows["item_id"].to_numpy(),
                self.rows["event_timestamp"].to_numpy(),
                length=self.spec.history_length,
            )
        features = model_inputs(self.spec, columns)
        data = tf.data.Dataset.from_tensor_slices((features, np.zeros(len(self.rows))))
        return data.shuffle(len(self.rows), seed=0).batch(64, drop_remainder=True)


def train_tiny(folder: Path, epochs: int = 4, history_length: int = 0) -> Tiny:
    """A two-tower trained ``epochs`` epochs on the tiny data written under ``folder``
    (with a history encoding of ``history_length`` entries when > 0)."""
    data = write_tiny_data(folder)
    layout = layout_from_spec(load_spec(data.spec_uri))
    users, items = pd.read_parquet(data.users_uri), pd.read_parquet(data.items_uri)
    rows = pd.read_parquet(data.training_set_uri)
    spec = TwoTowerSpec.from_tables(
        train=rows,
        users=users,
        items=items,
        user_features=layout.user_features,
        item_features=layout.item_features,
        embedding_dim=16,
        temperature=0.2,
        history_length=history_length,
    )
    keras.utils.set_random_seed(0)
    tiny = Tiny(build_training_model(spec), spec, users, items, rows)
    tiny.model.compile(optimizer=keras.optimizers.Adam(0.01), loss=InBatchSoftmaxLoss())
    tiny.model.fit(tiny.dataset(), epochs=epochs, verbose=0)
    return tiny
