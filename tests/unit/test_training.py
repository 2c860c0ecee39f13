"""Training on tiny synthetic data: split, strategy, export contract, idempotence, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import TinyData, write_tiny_data
from recops.config import RETRIEVAL_K
from recops.training import TrainConfig, TrainResult, split_interactions, train

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

DIM = 16


def _config(data: TinyData, output_dir: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "training_set_uri": data.training_set_uri,
        "users_uri": data.users_uri,
        "items_uri": data.items_uri,
        "output_dir": str(output_dir),
        "epochs": 2,
        "embedding_dim": DIM,
        "batch_size": 128,
        "replicas": 2,
        "logq_correction": True,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(data: TinyData, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(_config(data, tmp_path_factory.mktemp("run") / "train"))


def test_split_is_recbole_80_10_10_per_user() -> None:
    users = np.repeat([1, 2, 3], [30, 20, 5])
    items = np.arange(users.size)
    split = split_interactions(users, items, seed=2020)

    counts = split.groupby(["user_id", "split"]).size().unstack(fill_value=0)
    assert counts.loc[1, ["train", "valid", "test"]].tolist() == [24, 3, 3]
    assert counts.loc[2, ["train", "valid", "test"]].tolist() == [16, 2, 2]
    # RecBole gives a 0.5-row share one row while train keeps more than one.
    assert counts.loc[3, ["train", "valid", "test"]].tolist() == [3, 1, 1]
    assert split["item_id"].tolist() == items.tolist()
    again = split_interactions(users, items, seed=2020)
    assert again["split"].tolist() == split["split"].tolist()
    other = split_interactions(users, items, seed=7)
    assert other["split"].tolist() != split["split"].tolist()


def test_result_and_split_file(trained: TrainResult, data: TinyData) -> None:
    import tensorflow as tf

    assert trained.strategy == "MirroredStrategy"
    assert trained.replicas == min(2, len(tf.config.list_logical_devices("CPU")))
    assert (trained.epochs_run, trained.resumed_from_epoch) == (2, 0)
    assert np.isfinite(trained.final_loss) and trained.examples_per_s > 0
    assert trained.n_candidates == data.n_items and trained.k == RETRIEVAL_K
    json.dumps(trained.to_dict())

    split = pd.read_parquet(trained.split_uri)
    assert len(split) == data.n_rows
    assert split["split"].value_counts().to_dict() == {"train": 1440, "valid": 180, "test": 180}
    assert trained.train_rows == 1440

    run_dir = Path(trained.model_dir).parent
    assert (run_dir / "_SUCCESS").is_file()
    assert not (run_dir / "_staging").exists() and not (run_dir / "backup").exists()
    assert (Path(trained.weights_uri) / "spec.json").is_file()


def test_export_obeys_the_serving_contract(trained: TrainResult, data: TinyData) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(trained.model_dir)
    assert set(model.signatures) == {"serving_default", "user_embedding", "item_embeddings"}
    serve = model.signatures["serving_default"]
    _, inputs = serve.structured_input_signature
    assert {name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()} == {
        "user_id": (tf.int64, [None]),
        "age": (tf.int64, [None]),
        "gender": (tf.string, [None]),
        "occupation": (tf.string, [None]),
    }
    assert serve.structured_outputs["item_ids"].shape.as_list() == [None, RETRIEVAL_K]
    assert serve.structured_outputs["scores"].dtype == tf.float32

    # User 999 and the occupation "pilot" are unknown: they fall into the OOV buckets.
    request = {
        "user_id": tf.constant([1, 2, 999], tf.int64),
        "age": tf.constant([30, 40, 50], tf.int64),
        "gender": tf.constant(["M", "F", "M"]),
        "occupation": tf.constant(["engineer", "artist", "pilot"]),
    }
    out = serve(**request)
    assert out["item_ids"].dtype == tf.int64 and out["item_ids"].shape == (3, RETRIEVAL_K)
    scores = out["scores"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert set(out["item_ids"].numpy().ravel()) <= set(range(1, data.n_items + 1))

    user = model.signatures["user_embedding"](**request)["embedding"].numpy()
    assert user.shape == (3, DIM) and user.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(user, axis=1), 1.0, rtol=1e-5)

    catalogue = model.signatures["item_embeddings"]()
    assert catalogue["item_ids"].numpy().tolist() == list(range(1, data.n_items + 1))
    assert catalogue["embeddings"].shape == (data.n_items, DIM)
    # The served top-K is the brute-force top-K over the stored candidates.
    best = np.argsort(-(user @ catalogue["embeddings"].numpy().T), axis=1)[:, :5]
    np.testing.assert_array_equal(catalogue["item_ids"].numpy()[best], out["item_ids"][:, :5])


def test_second_call_returns_stored_result(trained: TrainResult, data: TinyData) -> None:
    run_dir = Path(trained.model_dir).parent
    stamp = (run_dir / "model" / "saved_model.pb").stat().st_mtime_ns
    again = train(_config(data, run_dir))
    assert again == trained
    assert (run_dir / "model" / "saved_model.pb").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="different config"):
        train(_config(data, run_dir, epochs=3))


def test_retry_resumes_from_backup(data: TinyData, tmp_path: Path) -> None:
    import tf_keras

    class Crash(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == 1:
                raise RuntimeError("simulated worker loss")

    config = _config(data, tmp_path / "train")
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, callbacks=[Crash()])
    assert not (tmp_path / "train" / "_SUCCESS").exists()
    assert (tmp_path / "train" / "backup").is_dir()

    resumed = train(config)
    assert (resumed.resumed_from_epoch, resumed.epochs_run) == (1, 1)
    assert (tmp_path / "train" / "_SUCCESS").is_file()


def test_same_seed_gives_same_weights(data: TinyData, tmp_path: Path) -> None:
    import tensorflow as tf

    runs = [train(_config(data, tmp_path / name, epochs=1)) for name in ("a", "b")]
    ckpts = [str(Path(run.weights_uri) / "ckpt") for run in runs]
    names = [name for name, _ in tf.train.list_variables(ckpts[0]) if "layer_with_weights" in name]
    assert names
    for name in names:
        np.testing.assert_array_equal(
            tf.train.load_variable(ckpts[0], name), tf.train.load_variable(ckpts[1], name)
        )


def test_missing_column_names_the_file(data: TinyData, tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    pd.read_parquet(data.training_set_uri).drop(columns="genre_mask").to_parquet(broken)
    config = _config(data, tmp_path / "train", training_set_uri=str(broken))
    with pytest.raises(ValueError, match=r"broken\.parquet.*genre_mask"):
        train(config)
