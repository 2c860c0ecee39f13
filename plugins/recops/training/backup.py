"""The BackupAndRestore checkpoint a retry resumes from, checked before it is trusted.

``verify_backup`` reads every tensor of the latest checkpoint back (and checks the
early-stopping state files), so a truncated or corrupt backup stops the retry with
``CheckpointCorruptError`` naming the file instead of silently starting from epoch 0.
``prepare_backup`` is what ``train`` calls: verify, or (opted in) discard and start over.
TensorFlow is imported inside ``verify_backup``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from recops_models.tf_env import tensorflow

from recops.errors import CheckpointCorruptError

__all__ = [
    "BACKUP_CHECKPOINT_DIR",
    "BACKUP_DIR",
    "EARLY_STOPPING_DIR",
    "prepare_backup",
    "verify_backup",
]

log = logging.getLogger(__name__)

#: The backup folder inside the run's output folder; removed once the run is published.
BACKUP_DIR = "backup"
#: Where BackupAndRestore keeps its checkpoint inside the backup folder.
BACKUP_CHECKPOINT_DIR = "chief"
#: Where the early-stopping state lives inside the backup folder.
EARLY_STOPPING_DIR = "early_stopping"


_DATA_SHARD = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<total>\d{5})$")


def verify_backup(backup_dir: Path) -> int | None:
    """Check that the BackupAndRestore checkpoint under ``backup_dir`` is complete.

    Every tensor of the latest checkpoint is read back, so a truncated or bit-flipped
    data shard (TF checks each tensor's CRC32C) fails here, before training, instead of
    half-way into a restore, and a checkpoint whose bookkeeping is lost cannot make the
    retry start from epoch 0 without anyone noticing. The early-stopping state files are
    checked as well.

    Args:
        backup_dir: The run's backup folder (``<output_dir>/backup``).

    Returns:
        The epoch the checkpoint was saved in, or None when there is no checkpoint.

    Raises:
        CheckpointCorruptError: Naming the file that is missing, truncated or unreadable.
    """
    ckpt_dir = backup_dir / BACKUP_CHECKPOINT_DIR
    _verify_early_stopping_state(backup_dir / EARLY_STOPPING_DIR)
    if not ckpt_dir.is_dir():
        return None
    # ``ckpt-N_temp`` folders are what a save killed before its final rename leaves.
    pieces = sorted(
        p for p in ckpt_dir.iterdir() if p.name.startswith("ckpt-") and "_temp" not in p.name
    )
    state_file = ckpt_dir / "checkpoint"
    if not state_file.is_file():
        if pieces:
            raise CheckpointCorruptError(
                f"backup checkpoint state file {state_file} is missing but {pieces[0]} exists; "
                "set TrainConfig.discard_corrupt_backup=True to start over"
            )
        return None
    match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state_file.read_text(), re.M)
    if match is None:
        raise CheckpointCorruptError(f"backup checkpoint state file {state_file} is unreadable")
    prefix = Path(match.group(1))
    if not prefix.is_absolute():
        prefix = ckpt_dir / prefix
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise CheckpointCorruptError(f"backup checkpoint index {index} is missing")
    shards = [m for p in pieces if (m := _DATA_SHARD.match(p.name)) and m["prefix"] == prefix.name]
    total = int(shards[0]["total"]) if shards else 1
    for shard in range(total):
        data = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{total:05d}")
        if not data.is_file():
            raise CheckpointCorruptError(f"backup checkpoint data file {data} is missing")

    tf = tensorflow()

    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointCorruptError(
            f"backup checkpoint index {index} is unreadable: {exc}"
        ) from exc
    data_files = ", ".join(str(p) for p in sorted(prefix.parent.glob(f"{prefix.name}.data-*")))
    # A short shard surfaces as IndexError ("Read less bytes than requested"), a flipped
    # byte as DataLossError (CRC mismatch).
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as exc:
        raise CheckpointCorruptError(
            f"backup checkpoint data file {data_files} is truncated or corrupt "
            f"(reading {name!r}: {type(exc).__name__}); "
            "set TrainConfig.discard_corrupt_backup=True to start over"
        ) from exc
    epochs = [n for n in reader.get_variable_to_shape_map() if n.startswith("ckpt_saved_epoch")]
    return int(reader.get_tensor(epochs[0])) if epochs else None


def _verify_early_stopping_state(state_dir: Path) -> None:
    if not state_dir.is_dir():
        return
    for path in sorted(state_dir.glob("state-*.json")):
        try:
            state = json.loads(path.read_text())
            weights = state.get("weights_file")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise CheckpointCorruptError(f"early-stopping state {path} is unreadable") from exc
        if weights and not (state_dir / weights).is_file():
            raise CheckpointCorruptError(
                f"early-stopping weights {state_dir / weights} named by {path} are missing"
            )


def prepare_backup(backup_dir: Path, discard_corrupt: bool) -> int | None:
    """Verify the backup; on corruption raise, or (opted in) log and remove it.

    Returns:
        The epoch the backup was saved in, None when training starts afresh.
    """
    try:
        saved = verify_backup(backup_dir)
    except CheckpointCorruptError as exc:
        if not discard_corrupt:
            raise
        log.warning("discarding the corrupt backup in %s and starting over: %s", backup_dir, exc)
        shutil.rmtree(backup_dir, ignore_errors=True)
        return None
    if saved is not None:
        log.info("resuming from the backup in %s (saved in epoch %d)", backup_dir, saved)
    return saved
