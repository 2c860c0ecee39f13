"""Training survives a kill -9 mid-epoch, and a damaged backup is reported, not ignored.

The kill test runs ``train`` in subprocesses on tiny data: the first is slowed down by a
sleeping callback, killed with SIGKILL once the backup holds epoch 1, and the same
config is run again. The resumed run must restore the optimizer (``resumed_from_step >
0``) and end within the seed spread of uninterrupted runs. The corruption tests crash a
run in-process, damage the backup checkpoint and expect ``CheckpointCorruptError``
naming the file, then start over only when ``discard_corrupt_backup`` opts in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from recops.training import CheckpointCorruptError, TrainConfig, train, verify_backup

from tests.unit._tiny_data import TinyData, write_tiny_data

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

STEPS_PER_EPOCH = 1440 // 128  # train rows of the tiny data // batch size

_RUN_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import tf_keras
    from recops.training import TrainConfig, train

    configs, delay = json.loads(sys.argv[1]), float(sys.argv[2])

    class Slow(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(delay)

    results = [train(TrainConfig(**c), callbacks=[Slow()] if delay else []) for c in configs]
    print("RESULT", json.dumps([r.to_dict() for r in results]))
    """
)


def _config(data: TinyData, output_dir: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "training_set_uri": data.training_set_uri,
        "users_uri": data.users_uri,
        "items_uri": data.items_uri,
        "spec_uri": data.spec_uri,
        "output_dir": str(output_dir),
        "epochs": 8,
        "embedding_dim": 16,
        "batch_size": 128,
        "replicas": 1,
        "early_stopping_patience": 3,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


def _command(configs: list[TrainConfig], delay: float = 0.0) -> list[str]:
    payload = json.dumps([c.to_dict() for c in configs])
    return [sys.executable, "-c", _RUN_SCRIPT, payload, str(delay)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}


def _run(configs: list[TrainConfig]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        _command(configs), capture_output=True, text=True, env=_env(), timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    results: list[dict[str, Any]] = json.loads(line.removeprefix("RESULT "))
    return results


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
@pytest.mark.extended
def test_kill_9_mid_epoch_resumes_from_the_backup(data: TinyData, tmp_path: Path) -> None:
    # Two logical CPU replicas: the retry must still set them up with a backup present.
    config = _config(data, tmp_path / "killed", replicas=2)
    states = tmp_path / "killed" / "backup" / "early_stopping"
    victim = subprocess.Popen(
        _command([config], delay=0.05),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 240
        # state-00002 is written after epoch 1's backup: a checkpoint for epoch >= 1 exists.
        while not (states / "state-00002.json").is_file():
            assert victim.poll() is None, victim.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no backup of epoch 1 within 240 s"
            time.sleep(0.05)
        time.sleep(0.2)  # into epoch 3: 11 steps of >= 50 ms each
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.stderr.close()  # type: ignore[union-attr]
    assert not (tmp_path / "killed" / "_SUCCESS").exists()

    (resumed,) = _run([config])
    assert resumed["resumed_from_epoch"] >= 2 and resumed["replicas"] == 2
    # The optimizer came back with the steps of every finished epoch.
    assert resumed["resumed_from_step"] == resumed["resumed_from_epoch"] * STEPS_PER_EPOCH > 0
    assert len(resumed["valid_ndcg_at_10"]) == resumed["resumed_from_epoch"] + resumed["epochs_run"]
    assert (tmp_path / "killed" / "_SUCCESS").is_file()
    assert not (tmp_path / "killed" / "backup").exists()

    baseline, other_seed = _run(
        [
            _config(data, tmp_path / "plain", replicas=2),
            _config(data, tmp_path / "seed7", replicas=2, seed=7),
        ]
    )
    assert baseline["resumed_from_step"] == 0
    best = {
        name: max(run["valid_ndcg_at_10"])
        for name, run in (("resumed", resumed), ("baseline", baseline), ("seed7", other_seed))
    }
    # Resuming reorders the shuffles after the kill, so it is not bit-identical; it must
    # land within the spread that a change of seed gives (floor 0.03 NDCG@10: two
    # seeds can agree by chance).
    spread = abs(best["baseline"] - best["seed7"])
    assert abs(best["resumed"] - best["baseline"]) <= max(2 * spread, 0.03), (best, spread)


def _crashed_run(data: TinyData, output_dir: Path) -> TrainConfig:
    """Leave a backup of epoch 1 behind, as a worker lost at the start of epoch 2 does."""
    import tf_keras

    class Crash(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch == 2:
                raise RuntimeError("simulated worker loss")

    config = _config(data, output_dir, epochs=3)
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, callbacks=[Crash()])
    return config


@pytest.mark.parametrize("damage", ["truncated_data", "missing_index"])
def test_damaged_backup_is_reported_by_name(data: TinyData, tmp_path: Path, damage: str) -> None:
    config = _crashed_run(data, tmp_path / "run")
    assert verify_backup(tmp_path / "run" / "backup") == 1  # intact: saved after epoch 1
    ckpt = tmp_path / "run" / "backup" / "chief"
    (data_file,) = ckpt.glob("ckpt-*.data-00000-of-00001")
    if damage == "truncated_data":
        target = data_file
        payload = data_file.read_bytes()
        data_file.write_bytes(payload[: len(payload) // 2])
    else:
        target = data_file.with_name(data_file.name.split(".data-")[0] + ".index")
        target.unlink()
    before = sorted((p.name, p.stat().st_size) for p in ckpt.iterdir())

    with pytest.raises(CheckpointCorruptError, match=target.name):
        train(config)
    # Nothing was restarted or overwritten: the evidence is still there.
    assert sorted((p.name, p.stat().st_size) for p in ckpt.iterdir()) == before
    assert not (tmp_path / "run" / "_SUCCESS").exists()

    fresh = train(dataclasses.replace(config, discard_corrupt_backup=True))
    assert (fresh.resumed_from_epoch, fresh.resumed_from_step, fresh.epochs_run) == (0, 0, 3)
    assert len(fresh.valid_ndcg_at_10) == 3
    assert (tmp_path / "run" / "_SUCCESS").is_file()


def test_process_lost_after_training_does_not_retrain(data: TinyData, tmp_path: Path) -> None:
    import tf_keras

    class LostDuringExport(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            raise RuntimeError("simulated loss after the last epoch")

    config = _config(data, tmp_path / "run", epochs=2)
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, callbacks=[LostDuringExport()])
    assert not (tmp_path / "run" / "_SUCCESS").exists()

    again = train(config)
    # Nothing left to train: the retry exports the best epoch kept in the backup.
    assert (again.epochs_run, again.resumed_from_epoch) == (0, 2)
    assert again.resumed_from_step == 2 * STEPS_PER_EPOCH
    assert len(again.valid_ndcg_at_10) == 2
    assert again.best_epoch == max(range(2), key=again.valid_ndcg_at_10.__getitem__)
    assert (tmp_path / "run" / "_SUCCESS").is_file()
    assert not (tmp_path / "run" / "backup").exists()
