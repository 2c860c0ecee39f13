"""Early stopping: the callback keeps the best epoch, and its state survives on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recops.errors import ParamError
from recops.training import TrainConfig
from recops.training.early_stopping import (
    early_stopping_callback,
    finished_state,
    load_states,
    load_weights,
    save_weights,
    state_before,
)
from recops_models.tf_env import use_legacy_keras

use_legacy_keras()


def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    import tf_keras

    # A crafted score sequence: best at epoch 1, then two epochs without improvement.
    scripted = iter([0.10, 0.30, 0.20, 0.25, 0.90, 0.95])
    stopper = early_stopping_callback(
        lambda model: next(scripted), patience=2, state_dir=tmp_path / "es"
    )

    class Snapshots(tf_keras.callbacks.Callback):  # type: ignore[misc]
        weights: list[list[np.ndarray]] = []

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.weights.append([w.copy() for w in self.model.get_weights()])

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    model.fit(
        x, x.sum(axis=1), epochs=6, batch_size=16, callbacks=[stopper, Snapshots()], verbose=0
    )

    assert stopper.history == [0.10, 0.30, 0.20, 0.25]  # stopped after epoch 3
    assert (stopper.best_epoch, stopper.stopped_early) == (1, True)
    assert len(Snapshots.weights) == 4
    assert not np.allclose(Snapshots.weights[1][0], Snapshots.weights[3][0])
    for restored, best in zip(model.get_weights(), Snapshots.weights[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    # The state a resumed run needs is on disk: one file per epoch, best weights once.
    state = json.loads((tmp_path / "es" / "state-00003.json").read_text())
    assert (state["best_epoch"], state["wait"], state["stopped"]) == (1, 2, True)
    assert sorted(p.name for p in (tmp_path / "es").glob("*.npz")) == [
        "best-00000.npz",
        "best-00001.npz",
    ]


def test_weights_round_trip(tmp_path: Path) -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5], np.float32)]
    save_weights(tmp_path / "es" / "best-00000.npz", weights)
    assert [p.name for p in (tmp_path / "es").iterdir()] == ["best-00000.npz"]
    for got, want in zip(load_weights(tmp_path / "es" / "best-00000.npz"), weights, strict=True):
        np.testing.assert_array_equal(got, want)


def _state(epoch: int, *, stopped: bool = False) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "history": [0.1] * (epoch + 1),
        "best_epoch": 0,
        "best_score": 0.1,
        "wait": epoch,
        "stopped": stopped,
        "loss": 1.0,
        "step": 10 * (epoch + 1),
        "weights_file": "best-00000.npz",
    }


def test_state_before_and_finished_state(tmp_path: Path) -> None:
    state_dir = tmp_path / "es"
    state_dir.mkdir()
    for epoch in (0, 1):
        (state_dir / f"state-{epoch:05d}.json").write_text(json.dumps(_state(epoch)))
    states = load_states(state_dir)
    assert sorted(states) == [0, 1] and load_states(tmp_path / "none") == {}
    assert state_before(states, 0) is None
    assert state_before(states, 2) == states[1]

    config = TrainConfig(
        training_set_uri="t", users_uri="u", items_uri="i", spec_uri="s", output_dir="o",
        epochs=2,
        early_stopping_patience=3,
    )  # fmt: skip
    # Saved in epoch 1 of 2: both epochs ran, so there is nothing left to fit.
    assert finished_state(state_dir, config, 1) == states[1]
    assert finished_state(state_dir, config, 0) is None  # epoch 1 is still to run
    assert finished_state(state_dir, config, None) is None
    off = TrainConfig(
        training_set_uri="t", users_uri="u", items_uri="i", spec_uri="s", output_dir="o",
        epochs=2, early_stopping_patience=0,
    )  # fmt: skip
    assert finished_state(state_dir, off, 1) is None


def test_patience_must_be_positive() -> None:
    with pytest.raises(ParamError, match="patience=0"):
        early_stopping_callback(lambda model: 0.0, patience=0)
