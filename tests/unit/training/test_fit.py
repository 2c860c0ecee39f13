"""``train()`` on tiny synthetic data: split file, idempotence, resume, seeds, protocols."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _tiny_data import TinyData, write_tiny_data
from recops.config import RETRIEVAL_K
from recops.dataset_spec import load_spec
from recops.errors import DataError
from recops.layout import layout_from_spec
from recops.tables import read_items, read_training_set, read_users
from recops.training import TrainConfig, TrainResult, train
from recops.training.inputs import fit_model_spec, training_inputs
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()

DIM = 16


def _config(data: TinyData, output_dir: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "training_set_uri": data.training_set_uri,
        "users_uri": data.users_uri,
        "items_uri": data.items_uri,
        "spec_uri": data.spec_uri,
        "output_dir": str(output_dir),
        "epochs": 2,
        "embedding_dim": DIM,
        "batch_size": 128,
        "replicas": 2,
        "logq_correction": True,
        # These tests read the valid-NDCG curve, which early stopping records.
        "early_stopping_patience": 3,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(data: TinyData, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(_config(data, tmp_path_factory.mktemp("run") / "train"))


def test_result_and_split_file(trained: TrainResult, data: TinyData) -> None:
    import tensorflow as tf

    assert trained.strategy == "MirroredStrategy"
    assert trained.replicas == min(2, len(tf.config.list_logical_devices("CPU")))
    assert (trained.epochs_run, trained.resumed_from_epoch) == (2, 0)
    assert trained.resumed_from_step == 0 and trained.protocol == "random"
    # Early stopping (patience 3) scored every epoch and exported the best one.
    assert len(trained.valid_ndcg_at_10) == 2 and not trained.stopped_early
    assert trained.best_epoch == int(np.argmax(trained.valid_ndcg_at_10))
    assert all(0.0 <= v <= 1.0 for v in trained.valid_ndcg_at_10)
    assert not trained.mixed_precision or tf.config.list_logical_devices("GPU")
    assert np.isfinite(trained.final_loss) and trained.examples_per_s > 0
    assert trained.n_candidates == data.n_items and trained.k == RETRIEVAL_K
    json.dumps(trained.to_dict())

    split = pd.read_parquet(trained.split_uri)
    assert len(split) == data.n_rows
    assert split["split"].value_counts().to_dict() == {"train": 1440, "valid": 180, "test": 180}
    # The event type travels with the split: evaluation counts only positive types.
    assert set(split["event_type"]) == {"interaction"}
    assert trained.train_rows == 1440

    run_dir = Path(trained.model_dir).parent
    assert (run_dir / "_SUCCESS").is_file()
    assert not (run_dir / "_staging").exists() and not (run_dir / "backup").exists()
    assert (Path(trained.weights_uri) / "spec.json").is_file()


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
    # Restored optimizer state: one epoch of steps (1440 train rows // 128) was done.
    assert resumed.resumed_from_step == 1440 // 128
    # The early-stopping history of the crashed call survived in the backup folder.
    assert len(resumed.valid_ndcg_at_10) == 2
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
    pd.read_parquet(data.training_set_uri).drop(columns="genres").to_parquet(broken)
    config = _config(data, tmp_path / "train", training_set_uri=str(broken))
    with pytest.raises(ValueError, match=r"broken\.parquet.*genres"):
        train(config)


def test_missing_spec_names_the_file(data: TinyData, tmp_path: Path) -> None:
    config = _config(data, tmp_path / "train", spec_uri=str(tmp_path / "nope.yaml"))
    with pytest.raises(DataError, match=r"nope\.yaml"):
        train(config)


_LOSS_CURVE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from recops.training import TrainConfig, train
    import tf_keras

    class Losses(tf_keras.callbacks.Callback):
        values = []
        def on_epoch_end(self, epoch, logs=None):
            self.values.append(float(logs["loss"]))

    settings = json.loads(sys.argv[1])
    result = train(TrainConfig(**settings), callbacks=[Losses()])
    print("RESULT", json.dumps({"losses": Losses.values, "replicas": result.replicas}))
    """
)


def _losses_in_subprocess(config: TrainConfig) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    proc = subprocess.run(
        [sys.executable, "-c", _LOSS_CURVE_SCRIPT, json.dumps(config.to_dict())],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    parsed: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return parsed


@pytest.mark.slow
def test_two_replicas_give_the_one_replica_loss_curve(data: TinyData, tmp_path: Path) -> None:
    # Logical CPU devices are fixed per process, so each replica count gets its own.
    runs = {
        n: _losses_in_subprocess(
            _config(data, tmp_path / f"r{n}", replicas=n, epochs=3, early_stopping_patience=0)
        )
        for n in (1, 2)
    }
    assert [runs[n]["replicas"] for n in (1, 2)] == [1, 2]
    one, two = (np.asarray(runs[n]["losses"]) for n in (1, 2))
    assert one.shape == two.shape == (3,)
    assert one[-1] < one[0]  # it learns
    # Cross-replica negatives make the 2-replica loss the 1-replica loss up to float
    # summation order; slice-local negatives would differ by ~log(127/63) = 0.7.
    np.testing.assert_allclose(two, one, rtol=2e-3)


def test_mixed_precision_keeps_logits_and_towers_float32(data: TinyData) -> None:
    import tf_keras
    from recops_models.two_tower import build_training_model, towers_from_training_model

    layout = layout_from_spec(load_spec(data.spec_uri))
    frame = read_training_set(data.training_set_uri, layout)
    spec = fit_model_spec(
        layout,
        rows=frame,
        users=read_users(data.users_uri, layout),
        items=read_items(data.items_uri, layout),
        embedding_dim=DIM,
        temperature=0.25,
    )
    model = build_training_model(spec, mixed_precision=True)
    assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.get_layer("user_projection").compute_dtype == "float16"
    batch = training_inputs(spec, frame.iloc[:8])
    assert model(batch).dtype == "float32"
    user_tower, item_tower = towers_from_training_model(model)
    assert user_tower.output.dtype == item_tower.output.dtype == "float32"
    # Variables stay float32, so the weights load into a float32 model unchanged.
    plain = build_training_model(spec)
    plain.set_weights(model.get_weights())
    assert all(w.dtype == "float32" for w in plain.trainable_weights)


def test_temporal_protocol_splits_by_time(data: TinyData, tmp_path: Path) -> None:
    result = train(_config(data, tmp_path / "temporal", epochs=1, protocol="temporal", replicas=1))
    assert result.protocol == "temporal"
    split = pd.read_parquet(result.split_uri)
    frame = pd.read_parquet(data.training_set_uri)[["user_id", "item_id", "event_timestamp"]]
    joined = split.merge(frame, on=["user_id", "item_id"])
    assert len(joined) == data.n_rows
    # Per user, every train event is no later than any test event.
    per_user = joined.groupby(["user_id", "split"])["event_timestamp"]
    last_train = per_user.max().xs("train", level="split")
    first_test = per_user.min().xs("test", level="split")
    common = last_train.index.intersection(first_test.index)
    assert len(common) and (last_train[common] <= first_test[common]).all()


def test_the_specs_evaluation_block_chooses_the_protocol_and_its_shares(
    data: TinyData, tmp_path: Path
) -> None:
    import yaml

    raw = yaml.safe_load(Path(data.spec_uri).read_text())
    raw["evaluation"] = {
        "protocols": ["temporal", "random"],
        "random_split": {"train": 0.6, "valid": 0.2, "test": 0.2, "seed": 5},
        "temporal_cut": 0.7,
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    # The protocol left empty (the Param's default): the spec's first, with its shares.
    result = train(_config(data, tmp_path / "run", epochs=1, replicas=1, spec_uri=str(spec)))
    assert result.protocol == "temporal"
    split = pd.read_parquet(result.split_uri)
    shares = split["split"].value_counts(normalize=True)
    # Per user 50/20/30 by time (valid 0.2 before the cut at 0.7), give or take rounding.
    assert shares["test"] == pytest.approx(0.3, abs=0.05)
    assert shares["valid"] == pytest.approx(0.2, abs=0.05)
    # A run's own protocol wins, and the random split takes the spec's shares and seed.
    chosen = train(
        _config(data, tmp_path / "random", epochs=1, replicas=1, spec_uri=str(spec),
                protocol="random")
    )  # fmt: skip
    assert chosen.protocol == "random"
    random_shares = pd.read_parquet(chosen.split_uri)["split"].value_counts(normalize=True)
    assert random_shares["test"] == pytest.approx(0.2, abs=0.05)


def test_a_history_model_trains_and_serves_the_history(data: TinyData, tmp_path: Path) -> None:
    import tensorflow as tf
    from recops_models.two_tower import HISTORY_INPUT, HISTORY_PAD, TwoTowerSpec

    result = train(
        _config(data, tmp_path / "history", epochs=2, protocol="temporal", history_length=4)
    )
    spec = TwoTowerSpec.from_json((Path(result.weights_uri) / "spec.json").read_text())
    assert spec.history_length == 4
    assert len(result.valid_ndcg_at_10) == result.epochs_run  # scored with histories
    embed = tf.saved_model.load(result.model_dir).signatures["user_embedding"]
    users = pd.read_parquet(data.users_uri).drop_duplicates("user_id").head(8)
    request = {
        "user_id": tf.constant(users["user_id"].to_numpy(np.int64)),
        "age": tf.constant(users["age"].to_numpy(np.float32)),
        **{c: tf.constant(users[c].astype(str).to_numpy()) for c in ("gender", "occupation")},
        "zip_code": tf.constant(users["zip_code"].astype(str).to_numpy()),
    }
    items = pd.read_parquet(data.items_uri)["item_id"].to_numpy(np.int64)
    empty = np.full((len(users), 1), HISTORY_PAD, np.int64)
    seen = np.tile(items[:3], (len(users), 1))
    without = embed(**request, **{HISTORY_INPUT: tf.constant(empty)})["embedding"].numpy()
    with_seen = embed(**request, **{HISTORY_INPUT: tf.constant(seen)})["embedding"].numpy()
    # Known users: the history moves every embedding (the tower reads it).
    assert (np.abs(with_seen - without).max(axis=1) > 1e-4).all()
