"""Fixtures shared by the unit tests: one tiny dataset and one tiny trained two-tower.

Training once per session (not once per module) keeps the compression, TFLite and
selection tests on the same model and saves a training run per module.
"""

from __future__ import annotations

import pytest
from _tiny_data import TinyData, write_tiny_data
from recops.training import TrainConfig, TrainResult, train

TINY_DIM = 16


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    return write_tiny_data(tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture(scope="session")
def tiny_two_tower(tiny_data: TinyData, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(
        TrainConfig(
            training_set_uri=tiny_data.training_set_uri,
            users_uri=tiny_data.users_uri,
            items_uri=tiny_data.items_uri,
            spec_uri=tiny_data.spec_uri,
            output_dir=str(tmp_path_factory.mktemp("tiny-run") / "train"),
            epochs=2,
            embedding_dim=TINY_DIM,
            batch_size=128,
            # Records the valid-NDCG curve the report and export tests read.
            early_stopping_patience=3,
        )
    )
